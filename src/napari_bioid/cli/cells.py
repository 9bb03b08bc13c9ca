"""``bioid cells train-detector|detect|evaluate``: nucleus/cell detection on H&E images."""

from __future__ import annotations

import json
from pathlib import Path

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")


def add(sub) -> None:
    cells = sub.add_parser("cells", help="cell / nucleus detection on stained images")
    csub = cells.add_subparsers(dest="cmd", required=True)

    tr = csub.add_parser("train-detector", help="train the YOLO-style detector on images with instance labels")
    tr.add_argument("--images", type=Path, required=True, help="folder of RGB images (<name>.png)")
    tr.add_argument("--labels", type=Path, required=True, help="folder of instance label images (<name>.png or <name>_instances.png)")
    tr.add_argument("--out", type=Path, required=True)
    tr.add_argument("--um-per-px", type=float, required=True, help="pixel size of the training images (µm)")
    tr.add_argument("--model-um-per-px", type=float, default=0.5, help="pixel size the model works at (µm)")
    tr.add_argument("--val", type=int, default=2, help="images held out for validation")
    tr.add_argument("--steps", type=int, default=1500)
    tr.add_argument("--batch-size", type=int, default=8)
    tr.add_argument("--init", type=Path, default=None, help="fine-tune from this detector")
    tr.add_argument("--overwrite", action="store_true")

    de = csub.add_parser("detect", help="detect cells in an image or a folder → boxes CSV (and GeoJSON)")
    de.add_argument("input", type=Path)
    de.add_argument("--out", type=Path, required=True, help="boxes .csv or .geojson")
    de.add_argument("--detector", type=Path, default=None, help="default: the shipped nucleus detector")
    de.add_argument("--um-per-px", type=float, default=None, help="pixel size of the input (µm); unknown: the model's, with a warning")
    de.add_argument("--conf", type=float, default=0.5)
    de.add_argument("--classical", action="store_true", help="the classical baseline (colour deconvolution + watershed) instead")
    de.add_argument("--overlay", type=Path, default=None, help="PNG of the (first) image with its boxes")
    de.add_argument("--overwrite", action="store_true")

    ev = csub.add_parser("evaluate", help="mAP50 and F1 of boxes against truth boxes (CSV) at an IoU (JSON)")
    ev.add_argument("boxes", type=Path)
    ev.add_argument("truth", type=Path)
    ev.add_argument("--iou", type=float, default=0.5)
    ev.add_argument("--conf", type=float, default=0.5, help="score threshold for precision/recall/F1")


def _images(path: Path):
    from ..engine.errors import BioidInputError

    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise BioidInputError(f"{path}: no images ({', '.join(IMAGE_SUFFIXES)})")
        return files
    if not path.is_file():
        raise BioidInputError(f"{path}: no such file or folder")
    return [path]


def _train(args) -> int:
    from PIL import Image

    import numpy as np

    from ..engine.cells.data import Sample, boxes_from_labels, read_rgb, resample, split_names
    from ..engine.cells.detector import Detector, train_detector
    from ..engine.errors import BioidInputError
    from ..engine.progress import TqdmProgress

    if args.out.exists() and not args.overwrite:
        raise FileExistsError(f"{args.out} already exists; refusing to overwrite it (pass --overwrite)")
    f = args.um_per_px / args.model_um_per_px
    samples = []
    for img_path in _images(args.images):
        lab = next((p for p in (args.labels / f"{img_path.stem}.png", args.labels / f"{img_path.stem}_instances.png") if p.is_file()), None)
        if lab is None:
            continue
        image = read_rgb(img_path)
        labels = np.asarray(Image.open(lab))
        if labels.shape[:2] != image.shape[:2]:
            raise BioidInputError(f"{lab}: labels of {labels.shape[1]} × {labels.shape[0]} px do not match the image {img_path.name} "
                                  f"({image.shape[1]} × {image.shape[0]} px)")
        samples.append(Sample(img_path.stem, resample(image, f), boxes_from_labels(labels.astype(np.int64)) * f, um_per_px=args.model_um_per_px))
    if len(samples) <= args.val:
        raise BioidInputError(f"{len(samples)} labelled image(s) found: need more than --val {args.val}")
    tr, va = split_names(samples, args.val)
    bar = TqdmProgress("training")
    det = train_detector([s for s in samples if s.name in tr], [s for s in samples if s.name in va], steps=args.steps,
                         batch_size=args.batch_size, init=Detector.load(args.init) if args.init else None,
                         val_every=max(50, args.steps // 5), progress=bar)
    bar.close()
    det.metrics["held_out_images"] = va
    det.save(args.out, overwrite=args.overwrite)
    args.out.with_suffix(".json").write_text(json.dumps(det.metrics, indent=1))
    print(json.dumps({"model": str(args.out), **det.metrics.get("val", {})}))
    return 0


def _detect(args) -> int:
    import numpy as np
    import pandas as pd

    from ..engine.cells.baseline import classical_nuclei
    from ..engine.cells.data import read_rgb
    from ..engine.cells.detector import Detector
    from ..engine.cells.io import write_boxes
    from ..engine.errors import BioidInputError
    from ..engine.progress import TqdmProgress

    if args.out.exists() and not args.overwrite:
        raise FileExistsError(f"{args.out} already exists; refusing to overwrite it (pass --overwrite)")
    if args.out.suffix.lower() not in (".csv", ".geojson", ".json"):
        raise BioidInputError(f"{args.out}: use .csv or .geojson")
    files = _images(args.input)
    det = None
    if not args.classical:
        from ..engine.cells.detector import default_detector_path

        path = args.detector or default_detector_path()
        det = Detector.load(path)
    rows, first = [], None
    for f in files:
        image = read_rgb(f)
        if args.classical:
            r = classical_nuclei(image, args.um_per_px or 0.5)
        else:
            bar = TqdmProgress(f.name)
            r = det.detect(image, args.um_per_px, conf=args.conf, progress=bar)
            bar.close()
        names = det.config.class_names if det is not None else ["nucleus"]
        for b, s, c in zip(r["boxes"], r["scores"], r["classes"]):
            rows.append({"image": f.name, "x_min": b[0], "y_min": b[1], "x_max": b[2], "y_max": b[3], "score": s,
                         "class": names[int(c)], "class_probability": s})
        if first is None:
            first = (image, r)
    df = pd.DataFrame(rows, columns=["image", "x_min", "y_min", "x_max", "y_max", "score", "class", "class_probability"])
    write_boxes(df, args.out, overwrite=args.overwrite)
    if args.out.suffix.lower() == ".csv":
        write_boxes(df, args.out.with_suffix(".geojson"), overwrite=args.overwrite)
    if args.overlay is not None and first is not None:
        from PIL import Image, ImageDraw

        img = Image.fromarray(first[0])
        draw = ImageDraw.Draw(img)
        for b in first[1]["boxes"]:
            draw.rectangle([float(v) for v in b], outline=(0, 255, 0))
        from ..engine.io.atomic import atomic_write

        with atomic_write(args.overlay, overwrite=args.overwrite) as tmp:
            img.save(tmp, format="PNG")
    print(json.dumps({"images": len(files), "boxes": len(df), "per_image": {k: int(v) for k, v in df["image"].value_counts().items()},
                      "out": str(args.out), "mean_score": float(np.mean(df["score"])) if len(df) else None}))
    return 0


def _evaluate(args) -> int:
    from ..engine.cells.boxes import detection_metrics
    from ..engine.cells.io import read_boxes

    pred, truth = read_boxes(args.boxes), read_boxes(args.truth)
    images = sorted(set(truth["image"]) | set(pred["image"]))
    cols = ["x_min", "y_min", "x_max", "y_max"]
    preds = [(pred.loc[pred["image"] == i, cols].to_numpy(), pred.loc[pred["image"] == i, "score"].to_numpy()) for i in images]
    truths = [truth.loc[truth["image"] == i, cols].to_numpy() for i in images]
    print(json.dumps({"images": len(images), "iou": args.iou, **detection_metrics(preds, truths, args.iou, args.conf)}))
    return 0


HANDLERS = {"train-detector": _train, "detect": _detect, "evaluate": _evaluate}
