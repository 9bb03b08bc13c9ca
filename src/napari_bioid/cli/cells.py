"""``bioid cells train-detector|train-classifier|detect|stats|evaluate``: cell detection and typing on H&E images."""

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

    tc = csub.add_parser("train-classifier", help="train the ResNet-34 cell-type classifier on images with typed points")
    tc.add_argument("--images", type=Path, required=True, help="folder of RGB images (<name>.png)")
    tc.add_argument("--points", type=Path, required=True,
                    help="folder of <name>.csv with columns x, y (px; x = column) and class (or cell_type)")
    tc.add_argument("--out", type=Path, required=True)
    tc.add_argument("--um-per-px", type=float, required=True, help="pixel size of the training images (µm)")
    tc.add_argument("--classes", nargs="+", default=None,
                    help="class names in order (default: every class in the files, sorted; 'unclassified' and empty rows are skipped)")
    tc.add_argument("--val", type=int, default=2, help="images held out to choose the saved epoch")
    tc.add_argument("--epochs", type=int, default=30)
    tc.add_argument("--width", type=int, default=32, help="channels of the first ResNet stage (64 in the paper)")
    tc.add_argument("--init", type=Path, default=None, help="fine-tune from this classifier")
    tc.add_argument("--overwrite", action="store_true")

    de = csub.add_parser("detect", help="detect cells in an image or a folder → boxes CSV (and GeoJSON)")
    de.add_argument("input", type=Path)
    de.add_argument("--out", type=Path, required=True, help="boxes .csv or .geojson")
    de.add_argument("--detector", type=Path, default=None, help="default: the shipped nucleus detector")
    de.add_argument("--classifier", type=Path, default=None,
                    help="re-classify each box with this classifier ('default': the shipped CRC cell-type classifier)")
    de.add_argument("--um-per-px", type=float, default=None, help="pixel size of the input (µm); unknown: the model's, with a warning")
    de.add_argument("--conf", type=float, default=None, help="detection confidence (default: the model's operating point)")
    de.add_argument("--classical", action="store_true", help="the classical baseline (colour deconvolution + watershed) instead")
    de.add_argument("--overlay", type=Path, default=None, help="PNG of the (first) image with its boxes")
    de.add_argument("--overwrite", action="store_true")

    st = csub.add_parser("stats", help="counts, proportions, sizes and density scores per image and group → CSV tables and plots")
    st.add_argument("boxes", type=Path, help="boxes CSV (from detect, or corrected)")
    st.add_argument("--out", type=Path, required=True, help="output folder")
    st.add_argument("--groups", type=Path, default=None,
                    help="CSV with columns image, group; default: the image's sub-folder under --images, else one group")
    st.add_argument("--images", type=Path, default=None, help="folder of the images (their sizes; sub-folders = groups)")
    st.add_argument("--positive", nargs="+", default=[], help="the target class(es) of the density score")
    st.add_argument("--normal", nargs="+", default=None, help="the normal class(es) (default: every other class)")
    st.add_argument("--um-per-px", type=float, default=None, help="pixel size for areas in µm²")
    st.add_argument("--overwrite", action="store_true")

    ev = csub.add_parser("evaluate", help="mAP50 and F1 of boxes against truth boxes (CSV) at an IoU (JSON)")
    ev.add_argument("boxes", type=Path)
    ev.add_argument("truth", type=Path)
    ev.add_argument("--iou", type=float, default=0.5)
    ev.add_argument("--conf", type=float, default=0.5, help="score threshold for precision/recall/F1")


def _images(path: Path):
    from ..engine.errors import BioidInputError

    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
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
    import warnings

    import numpy as np
    import pandas as pd

    from ..engine.cells.baseline import classical_nuclei
    from ..engine.cells.data import read_rgb
    from ..engine.cells.io import BOX_COLUMNS, write_boxes
    from ..engine.cells.pipeline import detect_cells
    from ..engine.errors import BioidInputError
    from ..engine.progress import TqdmProgress

    if args.out.exists() and not args.overwrite:
        raise FileExistsError(f"{args.out} already exists; refusing to overwrite it (pass --overwrite)")
    if args.out.suffix.lower() not in (".csv", ".geojson", ".json"):
        raise BioidInputError(f"{args.out}: use .csv or .geojson")
    files = _images(args.input)
    det = clf = None
    if not args.classical:
        from ..engine.cells.detector import Detector, default_detector_path

        det = Detector.load(args.detector or default_detector_path())
    if args.classifier is not None:
        from ..engine.cells.classifier import Classifier, default_classifier_path

        clf = Classifier.load(default_classifier_path() if str(args.classifier) == "default" else args.classifier)
    if args.um_per_px is None:
        warnings.warn("--um-per-px not given: assuming the model's pixel size", stacklevel=1)
    tables, first = [], None
    for f in files:
        image = read_rgb(f)
        if args.classical:
            r = classical_nuclei(image, args.um_per_px or 0.5)
            df = pd.DataFrame(r["boxes"], columns=["x_min", "y_min", "x_max", "y_max"]).assign(score=r["scores"], **{"class": "nucleus"})
            df["class_probability"] = df["score"]
            if clf is not None:
                c = clf.classify(image, r["boxes"], args.um_per_px or 0.5)
                df["class"] = [clf.config.class_names[k] for k in c["classes"]]
                df["class_probability"] = c["probability"]
        else:
            bar = TqdmProgress(f.name)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                df = detect_cells(image, args.um_per_px, det, clf, conf=args.conf, progress=bar)
            bar.close()
        df.insert(0, "image", f.relative_to(args.input).as_posix() if args.input.is_dir() else f.name)
        tables.append(df)
        if first is None:
            first = (image, df)
    df = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=BOX_COLUMNS)
    write_boxes(df, args.out, overwrite=args.overwrite)
    if args.out.suffix.lower() == ".csv":
        write_boxes(df, args.out.with_suffix(".geojson"), overwrite=args.overwrite)
    if args.overlay is not None and first is not None:
        from ..engine.cells.io import write_overlay

        write_overlay(first[0], first[1], args.overlay, overwrite=args.overwrite)
    print(json.dumps({"images": len(files), "boxes": len(df), "per_image": {k: int(v) for k, v in df["image"].value_counts().items()},
                      "per_class": {k: int(v) for k, v in df["class"].value_counts().items()},
                      "out": str(args.out), "mean_score": float(np.mean(df["score"])) if len(df) else None}))
    return 0


def _train_classifier(args) -> int:
    import numpy as np
    import pandas as pd

    from ..engine.cells.classifier import Classifier, train_classifier
    from ..engine.cells.data import Sample, read_rgb
    from ..engine.errors import BioidInputError
    from ..engine.progress import TqdmProgress

    if args.out.exists() and not args.overwrite:
        raise FileExistsError(f"{args.out} already exists; refusing to overwrite it (pass --overwrite)")
    init = Classifier.load(args.init) if args.init else None
    tables = {}
    for img_path in _images(args.images):
        csv = args.points / f"{img_path.stem}.csv"
        if not csv.is_file():
            continue
        df = pd.read_csv(csv)
        col = "class" if "class" in df else "cell_type" if "cell_type" in df else None
        if col is None or "x" not in df or "y" not in df:
            raise BioidInputError(f"{csv}: needs columns x, y and class (or cell_type); has {list(df.columns)}")
        tables[img_path] = (df, col)
    if not tables:
        raise BioidInputError(f"no image in {args.images} has a points file <name>.csv in {args.points}")
    skip = {"", "unclassified", "nan"}
    found = sorted({str(c) for df, col in tables.values() for c in df[col].astype(str)} - skip)
    classes = init.config.class_names if init else (args.classes or found)
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise BioidInputError(f"classes {unknown} in the points files are not in the class list {classes}")
    samples = []
    for img_path, (df, col) in tables.items():
        image = read_rgb(img_path)
        xy = df[["x", "y"]].to_numpy(float)
        H, W = image.shape[:2]
        out = (xy[:, 0] < 0) | (xy[:, 1] < 0) | (xy[:, 0] >= W) | (xy[:, 1] >= H)
        if out.any():
            raise BioidInputError(f"{args.points / (img_path.stem + '.csv')}: {int(out.sum())} point(s) outside the image "
                                  f"{img_path.name} ({W} × {H} px), e.g. x={xy[out][0, 0]:g}, y={xy[out][0, 1]:g}")
        cls = np.array([classes.index(c) if c in classes else -1 for c in df[col].astype(str)], np.int64)
        samples.append(Sample(img_path.stem, image, np.concatenate([xy, xy], 1), cls, args.um_per_px, exact=False))
    if len(samples) <= args.val:
        raise BioidInputError(f"{len(samples)} image(s) with points: need more than --val {args.val}")
    rng = np.random.default_rng(0)
    val_names = set(rng.choice([s.name for s in samples], args.val, replace=False).tolist()) if args.val else set()
    bar = TqdmProgress("training")
    clf = train_classifier([s for s in samples if s.name not in val_names], [s for s in samples if s.name in val_names], classes,
                           epochs=args.epochs, width=args.width, init=init, progress=bar)
    bar.close()
    clf.metrics["held_out_images"] = sorted(val_names)
    clf.save(args.out, overwrite=args.overwrite)
    args.out.with_suffix(".json").write_text(json.dumps(clf.metrics, indent=1))
    v = clf.metrics.get("val", {})
    print(json.dumps({"model": str(args.out), "classes": list(classes), "accuracy": v.get("accuracy"), "weighted_f1": v.get("weighted_f1")}))
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


def _stats(args) -> int:
    import pandas as pd

    from ..engine.cells.io import read_boxes
    from ..engine.cells.stats import cell_statistics, write_statistics
    from ..engine.errors import BioidInputError

    boxes = read_boxes(args.boxes)
    if "class" not in boxes:
        raise BioidInputError(f"{args.boxes}: missing column 'class'")
    sizes, groups = {}, {}
    if args.images is not None:
        from PIL import Image

        if not args.images.is_dir():
            raise BioidInputError(f"{args.images}: no such folder")
        for p in sorted(args.images.rglob("*")):
            if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.endswith(".cells.csv"):
                key = p.relative_to(args.images).as_posix()
                with Image.open(p) as im:
                    sizes[key] = (im.height, im.width)
                if p.parent != args.images:
                    groups[key] = p.relative_to(args.images).parts[0]
    if args.groups is not None:
        g = pd.read_csv(args.groups)
        if not {"image", "group"} <= set(g.columns):
            raise BioidInputError(f"{args.groups}: needs columns image, group; has {list(g.columns)}")
        groups.update(dict(zip(g["image"].astype(str), g["group"].astype(str))))
    unknown = sorted(set(args.positive) - set(boxes["class"].astype(str)))
    if unknown:
        raise BioidInputError(f"positive class(es) {unknown} do not occur in {args.boxes} (classes: {sorted(set(boxes['class'].astype(str)))})")
    stats = cell_statistics(boxes, sizes, groups, args.positive, args.normal, args.um_per_px)
    files = write_statistics(stats, args.out, overwrite=args.overwrite)
    print(json.dumps({"out": str(args.out), "files": sorted(files), "images": len(stats["per_image"]), "groups": stats["per_group"]["group"].tolist(),
                      "cells": int(stats["per_image"]["n_cells"].sum())}))
    return 0


HANDLERS = {"train-detector": _train, "train-classifier": _train_classifier, "detect": _detect, "stats": _stats, "evaluate": _evaluate}
