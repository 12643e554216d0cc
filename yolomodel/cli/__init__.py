"""Command-line mains of the yolomodel tools (installed as console scripts; tools/*.py call them too)."""
