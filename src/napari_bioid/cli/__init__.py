"""The ``bioid`` command line: one module per domain.

``bioid tomo train|pick|simulate|evaluate``: particle picking in tomograms
(:mod:`.tomo`); ``bioid karyo train|orient``: chromosome rotation and polarity
(:mod:`.karyo`); ``bioid seq simulate|call|evaluate``: base calling
(:mod:`.seq`); ``bioid cells train-detector|detect|evaluate``: nucleus
detection (:mod:`.cells`). Every command validates all its inputs and outputs before doing
long work, prints a clear ``error:`` line and exits with status 2 on bad input,
and never overwrites a file unless ``--overwrite`` is given.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from typing import List, Optional

from ..engine.errors import BioidInputError, Cancelled
from . import cells, karyo, seq, tomo

DOMAINS = {"tomo": tomo, "karyo": karyo, "seq": seq, "cells": cells}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bioid", description="napari-bioid: bio-image identification (headless engine)")
    sub = parser.add_subparsers(dest="domain", required=True)
    for module in DOMAINS.values():
        module.add(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    handler = DOMAINS[args.domain].HANDLERS[args.cmd]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always", UserWarning)
            warnings.showwarning = lambda msg, *a, **k: print(f"warning: {msg}", file=sys.stderr)
            return handler(args)
    except (BioidInputError, FileExistsError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Cancelled:
        print("cancelled", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("interrupted; nothing was written", file=sys.stderr)
        return 130
