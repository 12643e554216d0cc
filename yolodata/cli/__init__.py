"""Command-line mains of the yolodata tools (installed as console scripts; tools/*.py call them too)."""
