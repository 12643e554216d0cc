"""Checkpoints of every kind the project writes or reads, below training (nothing here imports ``train/``).

* ``format``: the file format: format names, the metadata codec (anchors, class names), ``read_checkpoint``,
  ``save_checkpoint_atomic``, the EMA entries' prefix;
* ``loading``: a network with its weights from any checkpoint (trained, imported or a YOLOv5 ``.pt``) for
  eval, infer, export and training's starting weights;
* ``pt_reader``: a PyTorch ``.pt`` (zip + pickle) read as plain data without torch, nothing executed;
* ``yolov5_import``: a PyTorch YOLOv5 ``.pt`` checked and converted into a weights checkpoint.
"""
