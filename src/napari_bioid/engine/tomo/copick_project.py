"""copick projects: tomograms and picks shared with the other copick tools and the CryoET Data Portal.

A copick project (https://github.com/copick/copick; Ermel et al., 2024) is a
JSON configuration naming the pickable objects (name, label, radius in Å) and
where the runs live. Each run holds tomograms per voxel spacing (OME-Zarr, Å)
and pick sets identified by object name, user id and session id, with
positions in Å. :class:`CopickProject` reads and writes them through the
``copick`` library: tomograms open lazily at the voxel spacing and level
nearest the model's, picks become our coordinate tables (voxels, converted
with the tomogram's voxel size at this boundary only), and our picks become
pick sets that copick, napari-copick and ChimeraX-copick open.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Iterable, List, Optional

import numpy as np
import pandas as pd

from ..errors import BioidInputError
from ..io.atomic import PathLike
from ..io.coords import XYZ, make_table

#: copick user id of the picks this plugin writes
DEFAULT_USER_ID = "napari-bioid"


class CopickProject:
    """A copick project opened from its configuration file.

    Parameters
    ----------
    config : path
        The copick configuration JSON (filesystem, data-portal or mixed project).

    Raises
    ------
    BioidInputError
        Missing or invalid configuration (the copick error is quoted).
    """

    def __init__(self, config: PathLike):
        import copick

        self.config_path = Path(config)
        if not self.config_path.is_file():
            raise BioidInputError(f"{self.config_path}: no such copick configuration file")
        try:
            self.root = copick.from_file(str(self.config_path))
        except Exception as exc:  # pydantic ValidationError, JSON errors, unreachable roots
            raise BioidInputError(f"{self.config_path}: not a valid copick configuration ({exc})") from exc

    # -- what the project holds ---------------------------------------------------------------
    @property
    def runs(self) -> List[str]:
        """Run names, sorted."""
        return sorted(r.name for r in self.root.runs)

    @property
    def objects(self) -> pd.DataFrame:
        """Pickable objects: ``name, label, radius_A, is_particle`` (radius NaN when the project gives none)."""
        rows = [{"name": o.name, "label": o.label, "radius_A": np.nan if o.radius is None else float(o.radius), "is_particle": bool(o.is_particle)}
                for o in self.root.pickable_objects]
        return pd.DataFrame(rows, columns=["name", "label", "radius_A", "is_particle"])

    def _run(self, run: str):
        r = self.root.get_run(run)
        if r is None:
            raise BioidInputError(f"{self.config_path}: no run {run!r} (runs: {', '.join(self.runs) or 'none'})")
        return r

    def tomograms(self, runs: Optional[Iterable[str]] = None) -> pd.DataFrame:
        """One row per tomogram: ``run, voxel_size`` (Å), ``tomo_type``."""
        rows = []
        for name in runs or self.runs:
            for vs in self._run(name).voxel_spacings:
                for t in vs.tomograms:
                    rows.append({"run": name, "voxel_size": float(vs.voxel_size), "tomo_type": t.tomo_type})
        return pd.DataFrame(rows, columns=["run", "voxel_size", "tomo_type"])

    def pick_sets(self, runs: Optional[Iterable[str]] = None) -> pd.DataFrame:
        """One row per pick set: ``run, object_name, user_id, session_id, n`` (points)."""
        rows = []
        for name in runs or self.runs:
            for p in self._run(name).picks:
                rows.append({"run": name, "object_name": p.pickable_object_name, "user_id": p.user_id, "session_id": p.session_id,
                             "n": len(p.points or [])})
        return pd.DataFrame(rows, columns=["run", "object_name", "user_id", "session_id", "n"])

    # -- tomograms ------------------------------------------------------------------------------
    def read_tomogram(self, run: str, voxel_size: Optional[float] = None, tomo_type: Optional[str] = None,
                      target_voxel_size: Optional[float] = None, level: Optional[int] = None, check_finite: bool = True):
        """Open a run's tomogram lazily.

        Parameters
        ----------
        run : str
        voxel_size : float, optional
            The voxel spacing (Å) to read; default the one nearest
            ``target_voxel_size``, else the finest.
        tomo_type : str, optional
            e.g. ``wbp``, ``denoised``; default the first the run lists.
        target_voxel_size : float, optional
            Å per voxel wanted (a picking model's): chooses the spacing and,
            inside its OME-Zarr, the multiscale level nearest it.
        level : int, optional
            The OME-Zarr level to read instead.

        Returns
        -------
        Volume
            ``data`` a lazy [z, y, x] zarr array, ``voxel_size`` in Å,
            ``metadata`` with ``run``, ``tomo_type``, ``levels``, ``level``.

        Raises
        ------
        BioidInputError
            No such run, voxel spacing or tomogram type (the available ones are named).
        """
        from ..io.ngff import read_zarr_volume

        r = self._run(run)
        spacings = {float(vs.voxel_size): vs for vs in r.voxel_spacings}
        if not spacings:
            raise BioidInputError(f"run {run!r} has no tomograms")
        if voxel_size is not None:
            match = [v for v in spacings if abs(v - voxel_size) < 1e-3]
            if not match:
                raise BioidInputError(f"run {run!r} has no voxel spacing {voxel_size:g} Å (it has {', '.join(f'{v:g}' for v in sorted(spacings))})")
            chosen = match[0]
        elif target_voxel_size:
            chosen = min(spacings, key=lambda v: abs(np.log(v / target_voxel_size)))
        else:
            chosen = min(spacings)
        tomos = {t.tomo_type: t for t in spacings[chosen].tomograms}
        if not tomos:
            raise BioidInputError(f"run {run!r} has no tomogram at {chosen:g} Å")
        if tomo_type is None:
            tomo_type = next(iter(tomos))
        elif tomo_type not in tomos:
            raise BioidInputError(f"run {run!r} has no {tomo_type!r} tomogram at {chosen:g} Å (it has {', '.join(tomos)})")
        vol = read_zarr_volume(tomos[tomo_type].zarr(), level=level, voxel_size=target_voxel_size or chosen, check_finite=check_finite)
        if vol.voxel_size is None:
            vol.voxel_size = chosen
        vol.metadata.update(run=run, tomo_type=tomo_type, voxel_spacing=chosen)
        return vol

    # -- picks ----------------------------------------------------------------------------------
    def read_picks(self, run: str, voxel_size: float, object_names: Optional[Iterable[str]] = None, user_id: Optional[str] = None,
                   session_id: Optional[str] = None, class_ids: Optional[Dict[str, int]] = None) -> pd.DataFrame:
        """A run's picks as one coordinate table in voxels.

        Parameters
        ----------
        voxel_size : float
            Å per voxel of the tomogram the picks are used with (positions are
            stored in Å: voxel = Å / voxel_size).
        object_names, user_id, session_id : optional
            Filters (default: every pick set of the run).
        class_ids : {object name: class id}, optional
            Default: each object's ``label`` in the project.

        Returns
        -------
        DataFrame
            ``x, y, z`` (voxels), ``class_id``, ``score`` (copick's, NaN when
            absent), and ``object_name, user_id, session_id``.

        Raises
        ------
        BioidInputError
            No voxel size, or an object not in ``class_ids``.
        """
        if not voxel_size or voxel_size <= 0:
            raise BioidInputError("reading copick picks needs the tomogram's voxel size in Å")
        wanted = None if object_names is None else set(object_names)
        labels = class_ids or {o.name: int(o.label) for o in self.root.pickable_objects}
        tables = []
        for p in self._run(run).picks:
            if (wanted is not None and p.pickable_object_name not in wanted) or (user_id is not None and p.user_id != user_id) \
                    or (session_id is not None and p.session_id != session_id):
                continue
            if p.pickable_object_name not in labels:
                raise BioidInputError(f"picks of {p.pickable_object_name!r}: no class id for this object (known: {', '.join(labels)})")
            points = p.points or []
            xyz_a = np.array([[q.location.x, q.location.y, q.location.z] for q in points], np.float64).reshape(-1, 3)
            score = np.array([np.nan if q.score is None else q.score for q in points], np.float64)
            tables.append(make_table(xyz_a[:, ::-1] / float(voxel_size), class_id=labels[p.pickable_object_name], score=score,
                                     object_name=p.pickable_object_name, user_id=p.user_id, session_id=p.session_id))
        if not tables:
            return make_table(np.zeros((0, 3)), object_name=pd.Series(dtype=str), user_id=pd.Series(dtype=str), session_id=pd.Series(dtype=str))
        return pd.concat(tables, ignore_index=True)

    def write_picks(self, run: str, picks: pd.DataFrame, voxel_size: float, object_names: Dict[int, str], user_id: str = DEFAULT_USER_ID,
                    session_id: str = "0", overwrite: bool = False) -> List[str]:
        """Write picks as one copick pick set per class.

        Parameters
        ----------
        picks : DataFrame
            ``x, y, z`` (voxels), ``class_id``, optional ``score`` (NaN, e.g.
            a pick added by hand, is stored as 1.0: copick needs finite scores).
        voxel_size : float
            Å per voxel of the tomogram the picks were made on.
        object_names : {class id: object name}
            Each name must be a pickable object of the project.
        overwrite : bool
            Replace existing pick sets of the same object, user and session;
            their points are first kept as session ``<session_id>-backup``.

        Returns
        -------
        list of str
            ``user_session_object`` of every pick set written.

        Raises
        ------
        BioidInputError
            No voxel size, a class without a project object, missing columns.
        FileExistsError
            A pick set exists and ``overwrite`` is false (nothing is written).
        """
        if not voxel_size or voxel_size <= 0:
            raise BioidInputError("writing copick picks needs the tomogram's voxel size in Å")
        missing = [c for c in XYZ + ["class_id"] if c not in picks]
        if missing:
            raise BioidInputError(f"the picks have no {missing} column(s)")
        known = {o.name for o in self.root.pickable_objects}
        classes = sorted(int(c) for c in picks["class_id"].unique())
        for c in classes:
            name = object_names.get(c)
            if name not in known:
                raise BioidInputError(f"class {c} → {name!r} is not a pickable object of the project ({', '.join(sorted(known))})")
        r = self._run(run)
        existing = {c: r.get_picks(object_name=object_names[c], user_id=user_id, session_id=session_id) for c in classes}
        clash = [object_names[c] for c, e in existing.items() if e]
        if clash and not overwrite:
            raise FileExistsError(f"run {run!r} already has picks of {', '.join(clash)} by user {user_id!r}, session {session_id!r}; "
                                  "refusing to overwrite them (pass overwrite / --overwrite)")
        written = []
        for c in classes:
            name = object_names[c]
            for old in existing[c]:  # save before overwrite
                pos, trans = old.numpy()
                scores = np.array([1.0 if q.score is None else q.score for q in old.points or []], np.float64)
                backup = r.new_picks(name, f"{session_id}-backup", user_id, exist_ok=True)
                backup.from_numpy(pos, trans, scores=scores)
                backup.store()
            sel = picks[picks["class_id"] == c]
            xyz_a = sel[XYZ].to_numpy(np.float64) * float(voxel_size)
            score = sel["score"].to_numpy(np.float64) if "score" in sel else np.full(len(sel), np.nan)
            target = existing[c][0] if existing[c] else r.new_picks(name, session_id, user_id)
            target.from_numpy(xyz_a, scores=np.where(np.isfinite(score), score, 1.0))
            target.store()
            written.append(f"{user_id}_{session_id}_{name}")
        return written

    # -- training ---------------------------------------------------------------------------------
    def training_set(self, runs: Iterable[str], object_names: Iterable[str], user_id: Optional[str] = None,
                     session_id: Optional[str] = None, voxel_size: Optional[float] = None, tomo_type: Optional[str] = None):
        """Tomograms (in memory) and their picks for :func:`.training.train_picker`.

        Class ids are 1..K in the order of ``object_names``; each class's
        diameter in voxels is 2 · radius (Å, from the project) / voxel size + 1
        (11 voxels when the project gives no radius).

        Returns
        -------
        (volumes, tables, classes)
            lists of :class:`~napari_bioid.engine.io.Volume`, coordinate tables
            (voxels), and :class:`~.config.ParticleClass` of the objects.

        Raises
        ------
        BioidInputError
            No runs or objects, an object not in the project, runs at different
            voxel sizes, or a run without picks of the objects.
        """
        from ..io import Volume
        from .config import ParticleClass

        runs, names = list(runs), list(object_names)
        if not runs or not names:
            raise BioidInputError("training from a copick project needs at least one run and one object name")
        objects = self.objects.set_index("name")
        unknown = [n for n in names if n not in objects.index]
        if unknown:
            raise BioidInputError(f"{', '.join(unknown)}: not pickable objects of the project ({', '.join(objects.index)})")
        ids = {n: i + 1 for i, n in enumerate(names)}
        volumes, tables = [], []
        for run in runs:
            vol = self.read_tomogram(run, voxel_size=voxel_size, tomo_type=tomo_type)
            table = self.read_picks(run, vol.voxel_size, names, user_id, session_id, class_ids=ids)
            if not len(table):
                who = f" by user {user_id!r}" if user_id else ""
                raise BioidInputError(f"run {run!r} has no picks of {', '.join(names)}{who}")
            volumes.append(Volume(np.asarray(vol.data[...], dtype=np.float32), vol.voxel_size, None, vol.metadata))
            tables.append(table)
        sizes = sorted({round(v.voxel_size, 3) for v in volumes})
        if len(sizes) > 1:
            raise BioidInputError(f"the runs' tomograms have different voxel sizes {sizes} Å: pass one voxel spacing")
        vs = volumes[0].voxel_size
        classes = [ParticleClass(ids[n], n, 11.0 if np.isnan(objects.loc[n, "radius_A"]) else 2 * objects.loc[n, "radius_A"] / vs + 1)
                   for n in names]
        return volumes, tables, classes
