"""Base calling (issue 9): simulator physics, classical caller accuracy, calibration, real data, bad input."""

import json
import subprocess
import sys

import numpy as np
import pytest

from napari_bioid.engine.errors import BioidInputError
from napari_bioid.engine.seq.align import align_reads
from napari_bioid.engine.seq.classical import call_intensities, call_stack
from napari_bioid.engine.seq.io import read_cif, read_codebook, read_fasta, read_int_txt, read_stack, write_stack
from napari_bioid.engine.seq.quality import calibrate, reliability
from napari_bioid.engine.seq.simulate import SeqSimParams, phasing_matrix, render_super_resolution, simulate_tile

from conftest import SHARED

SEQ = SHARED / "data" / "sequencing"


@pytest.fixture(scope="module")
def chrm():
    path = SEQ / "reference" / "chrM.fasta"
    if not path.is_file():
        pytest.skip(f"reference not found at {path}")
    return read_fasta(path)


def _tile(chrm, seed, size=256, **kw):
    return simulate_tile(SeqSimParams(height=size, width=size, seed=seed, **kw), "".join(chrm.values()))


def _truth_errors(calls, tile, radius=2.0):
    """Errors against the simulator's reads: bool [matched cluster, cycle], and the match mask over the calls.

    A detected cluster is matched to the truth cluster within ``radius`` px whose read it agrees with most
    (overlapping clusters: the one it actually read out).
    """
    from scipy.spatial import cKDTree

    truth = np.array([[c for c in r] for r in tile.truth["read"]])
    called = np.array([[c for c in r] for r in calls.reads])
    near = cKDTree(tile.truth[["y", "x"]].to_numpy()).query_ball_point(calls.positions[["y", "x"]].to_numpy(), r=radius)
    ok = np.array([len(n) > 0 for n in near])
    best = [min(n, key=lambda j: int((truth[j] != called[i]).sum())) for i, n in enumerate(near) if n]
    return truth[best] != called[ok], ok


def test_phasing_matrix_is_a_distribution():
    P = phasing_matrix(60, 0.006, 0.003, 200)
    # all strands emit except those that never incorporated a base (p^t)
    np.testing.assert_allclose(P.sum(axis=1), 1.0 - 0.006 ** np.arange(1, 61), atol=1e-12)
    # expected position after t cycles: t (1 − p + q) − 1 (0-based emitting base)
    t = np.arange(1, 61)
    mean_pos = (P * np.arange(200)).sum(axis=1) / P.sum(axis=1)
    np.testing.assert_allclose(mean_pos[10:], (t * (1 - 0.006 + 0.003) - 1)[10:], atol=0.05)


def test_simulator_physics(chrm):
    tile = _tile(chrm, 3, size=128, drift_px=0.0, channel_offset_px=0.0, read_noise=0.0, background=0.0, decay=0.0,
                 phasing=0.0, prephasing=0.0, brightness_sigma=0.0)
    p = tile.params
    assert tile.stack.shape == (60, 4, 128, 128) and tile.stack.dtype == np.uint16
    assert len(tile.truth) == p.n_clusters
    # reads come from the reference (either strand)
    ref = "".join(chrm.values())
    from napari_bioid.engine.seq.io import reverse_complement

    assert all(r in ref or reverse_complement(r) in ref for r in tile.truth["read"][:50])
    # without phasing, the dye signal of cycle t is the base of cycle t
    called = tile.signal.argmax(axis=2)
    bases = np.array([["ACGT".index(c) for c in r] for r in tile.truth["read"]])
    assert (called == bases).mean() > 0.999
    # the image integrates to the clusters' signal (shot noise only): total counts ≈ Σ crosstalk-mixed signal
    total = tile.stack[0].astype(float).sum()
    assert total == pytest.approx(tile.extra["observed"][:, 0].sum(), rel=0.03)
    # spots have the requested FWHM: second moment of an isolated cluster's image
    sr = render_super_resolution(tile, cycles=[0])
    assert sr.shape == (1, 4, 256, 256) and sr.sum() == pytest.approx(tile.extra["observed"][:, 0].sum(), rel=0.02)


def test_classical_caller_on_a_fresh_tile(chrm):
    """Default parameters, ≥ 50 cycles: low error on the matched pass-filter clusters; phasing correction pays in late cycles."""
    tile = _tile(chrm, 111)  # the regularisation was chosen on seeds 101-102
    calls = call_stack(tile.stack)
    err, ok = _truth_errors(calls, tile)
    pf = calls.pass_filter[ok]
    assert ok.sum() > 0.5 * len(tile.truth) and pf.mean() > 0.6
    per_cycle = err[pf].mean(axis=0)
    assert err[pf].mean() < 0.02
    assert abs(calls.phasing - 0.006) < 0.0015 and abs(calls.prephasing - 0.003) < 0.0015
    uncorrected = call_intensities(calls.raw, calls.positions, correct_phasing=False)
    err_u, _ = _truth_errors(uncorrected, tile)
    last10, last10_u = per_cycle[-10:].mean(), err_u[pf][:, -10:].mean()
    assert last10 < 0.8 * last10_u, (last10, last10_u)
    # registration recovers the simulated drift and channel offsets (relative to cycle 1, channel A)
    est = calls.info["shifts"] - calls.info["shifts"][0, 0]
    true = tile.shifts - tile.shifts[0, 0]
    assert np.abs(est - true).max() < 0.35, np.abs(est - true).max()
    # reads: the called bases as letters, all at once or for some clusters (a mask or indices, as the run aligns them)
    reads = calls.reads
    assert len(reads) == len(calls.bases) and all(len(r) == calls.bases.shape[1] for r in reads)
    assert reads[0] == "".join("ACGT"[b] for b in calls.bases[0])
    pf_rows = np.flatnonzero(calls.pass_filter)
    assert calls.reads_at(pf_rows[::7]) == [reads[i] for i in pf_rows[::7]]
    assert calls.reads_at(calls.pass_filter) == [reads[i] for i in pf_rows]
    assert calls.reads_at([]) == []


def test_qualities_are_calibrated_on_fresh_tiles(chrm):
    """As a run calibrates (on its own reads aligned to the reference, as with a PhiX spike-in): the table is fitted
    on the aligned reads of half the clusters of four fresh tiles; on the other half, against the simulator's truth,
    the reported quality is within 2 Phred of the empirical one in every bin of ≥ 1,000 bases up to Q30."""
    rng = np.random.default_rng(0)
    fit_c, fit_e, fit_v, test_c, test_e = [], [], [], [], []
    for seed in (201, 202, 203, 204):
        tile = _tile(chrm, seed, size=512)
        calls = call_stack(tile.stack)
        err, ok = _truth_errors(calls, tile)
        idx = np.flatnonzero(ok & calls.pass_filter)
        half = rng.random(len(idx)) < 0.5
        fit, test = idx[half], idx[~half]
        al = align_reads(calls.reads_at(fit), chrm, n_cycles=calls.bases.shape[1])
        fit_c.append(calls.chastity[fit]), fit_e.append(al.errors), fit_v.append(al.covered)
        test_c.append(calls.chastity[test]), test_e.append(err[np.searchsorted(np.flatnonzero(ok), test)])
    table = calibrate(np.concatenate(fit_c), np.concatenate(fit_e), np.concatenate(fit_v))
    q = table.apply(np.concatenate(test_c))
    te = np.concatenate(test_e)
    bins = [r for r in reliability(q, te, np.ones_like(te)) if r["bases"] >= 1000 and r["reported"] <= 30]
    assert len(bins) >= 4
    worst = max(abs(r["reported"] - r["empirical"]) for r in bins)
    assert worst <= 2.0, bins


def test_alignment_counts_mismatches(chrm):
    ref = chrm[next(iter(chrm))]
    read = list(ref[1000:1060])
    read[10] = "A" if read[10] != "A" else "C"
    read[40] = "G" if read[40] != "G" else "T"
    from napari_bioid.engine.seq.io import reverse_complement

    reads = ["".join(read), reverse_complement(ref[5000:5060]), "ACGT" * 15]
    al = align_reads(reads, chrm)
    assert al.aligned.tolist() == [True, True, False]
    assert np.flatnonzero(al.errors[0]).tolist() == [10, 40] and al.strand[:2] == ["+", "-"]
    assert al.position[0] == 1000 and al.position[1] == 5000


def test_real_phix_intensities_align(tmp_path):
    """Real Illumina intensities (100 PhiX clusters × 45 cycles). AYB2, the published model-based caller, reaches 32 %
    of reads with ≤ 2 mismatches in 25 cycles and 10.3 % error on its aligned reads here (benchmarks/bench_seq.py)."""
    path = SEQ / "ayb" / "test100_int.txt"
    if not path.is_file():
        pytest.skip("AYB test data not found")
    x, pos = read_int_txt(path)
    assert x.shape == (100, 45, 4)
    calls = call_intensities(x, pos)
    phix = read_fasta(SEQ / "reference" / "phiX174.fasta")
    al = align_reads([r[:25] for r in calls.reads], phix, max_error_rate=0.0801)  # ≤ 2 mismatches in 25
    assert al.aligned.mean() >= 0.5
    full = align_reads(calls.reads, phix).summary()
    assert full["aligned_fraction"] >= 0.6 and full["error_rate"] < 0.07


def test_real_cif_reads_and_rejects_truncation(tmp_path):
    path = SEQ / "ayb" / "s_2_0001.cif"
    if not path.is_file():
        pytest.skip("CIF test data not found")
    x = read_cif(path)
    assert x.shape == (365, 76, 4)
    cut = tmp_path / "cut.cif"
    cut.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(BioidInputError, match="truncated"):
        read_cif(cut)


def test_real_iss_tile_beats_the_naive_decoder():
    from napari_bioid.engine.seq.iss import decode_iss, naive_decode

    path = SEQ / "iss_tile" / "iss_X12_Y1_left.tif"
    if not path.is_file():
        pytest.skip("ISS tile not found")
    stack, _ = read_stack(path)
    book = read_codebook(SEQ / "iss_tile" / "codebook.csv")
    spots, ours = decode_iss(stack, book)
    _, naive = naive_decode(stack, book)
    assert ours["fdr_at_threshold"] <= 0.05
    assert ours["decoded_at_target_fdr"] >= 3 * max(naive["decoded_at_target_fdr"], 1)
    assert ours["codebook_share"] > naive["codebook_share"] > 50 / 256
    assert spots["accepted"].sum() == ours["decoded_at_target_fdr"] and (spots.loc[spots["accepted"], "gene"] != "").all()


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "napari_bioid.cli", "seq", *map(str, args)], capture_output=True, text=True)


def test_cli_simulate_call_evaluate(tmp_path, chrm):
    ref = SEQ / "reference" / "chrM.fasta"
    res = _cli("simulate", "--reference", ref, "--out-dir", tmp_path, "--name", "t", "--size", "160,160", "--cycles", "50", "--seed", "7")
    assert res.returncode == 0, res.stderr
    stack, meta = read_stack(tmp_path / "t.tif")
    assert stack.shape == (50, 4, 160, 160) and meta["axes"] == "TCYX"
    res = _cli("call", tmp_path / "t.tif", "--out", tmp_path / "r.fastq", "--reference", ref, "--report", tmp_path / "qc")
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["aligned_fraction"] > 0.95 and summary["error_rate"] < 0.02
    for f in ("qc/qc.json", "qc/qc.png", "qc/quality_table.json", "r.csv"):
        assert (tmp_path / f).is_file()
    first = (tmp_path / "r.fastq").read_text().splitlines()[:4]
    assert first[0].startswith("@t:") and len(first[1]) == 50 == len(first[3])
    ev = _cli("evaluate", tmp_path / "r.fastq", "--reference", ref)
    assert json.loads(ev.stdout)["reads"] == summary["reads_written"]
    # a second call reuses the saved quality table and refuses to overwrite
    again = _cli("call", tmp_path / "t.tif", "--out", tmp_path / "r.fastq")
    assert again.returncode == 2 and "already exists" in again.stderr
    reuse = _cli("call", tmp_path / "t.tif", "--out", tmp_path / "r2.fastq", "--quality-table", tmp_path / "qc" / "quality_table.json")
    assert reuse.returncode == 0 and json.loads(reuse.stdout.splitlines()[-1])["quality_source"] == "given table"
    assert (tmp_path / "r2.fastq").read_text().splitlines()[3] == first[3]


@pytest.mark.parametrize("case", ["axes", "three_channels", "nan", "truncated_cif", "empty_fasta"])
def test_bad_input_is_refused_and_writes_nothing(tmp_path, case):
    out = tmp_path / "out.fastq"
    ref = tmp_path / "ref.fa"
    ref.write_text(">r\n" + "ACGT" * 50 + "\n")
    if case == "axes":
        src = tmp_path / "s.tif"
        import tifffile

        tifffile.imwrite(src, np.zeros((4, 64, 64, 10), np.uint16), description=json.dumps({"axes": "CYXT"}))
    elif case == "three_channels":
        src = write_stack(np.zeros((5, 3, 32, 32), np.uint16), tmp_path / "s.tif")
    elif case == "nan":
        arr = np.ones((5, 4, 32, 32), np.float32)
        arr[2, 1, 3, 3] = np.nan
        src = write_stack(arr, tmp_path / "s.tif")
    elif case == "truncated_cif":
        src = tmp_path / "s.cif"
        src.write_bytes(b"CIF\x01\x02" + (1).to_bytes(2, "little") + (10).to_bytes(2, "little") + (100).to_bytes(4, "little") + b"\x00" * 50)
    else:
        src = write_stack(np.zeros((5, 4, 32, 32), np.uint16), tmp_path / "s.tif")
        ref.write_text("")
    res = _cli("call", src, "--out", out, "--reference", ref)
    assert res.returncode == 2, res.stderr
    assert res.stderr.startswith("error:") and "Traceback" not in res.stderr
    assert not out.exists() and not out.with_suffix(".csv").exists()
