"""Cell and nucleus detection on stained images (METHODS.md §4), first stage: the YOLOv5-style detector.

Modules: :mod:`.yolo` (the network and its loss), :mod:`.detector` (training, tiled inference, model file),
:mod:`.boxes` (IoU, CIoU, NMS, mAP/F1), :mod:`.data` (MoNuSeg, CRCHistoPhenotypes, resampling), :mod:`.baseline`
(colour deconvolution + watershed), :mod:`.io` (boxes CSV / GeoJSON). The ResNet-34 re-classifier is not built yet.
"""
