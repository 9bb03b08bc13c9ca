"""Training on a synthetic volume: the network must learn, and the model file must round-trip."""

import threading
import warnings

import numpy as np
import pytest
import torch

from napari_bioid.engine.errors import BioidInputError, Cancelled
from napari_bioid.engine.io.coords import make_table
from napari_bioid.engine.tomo import ParticleClass, PickerConfig, evaluate_picks, load_picker, pick, train_picker

from conftest import synthetic_balls as synthetic


CFG = dict(classes=[ParticleClass(1, "blob", 7)], block_size=24, pad_size=4, channels=(4, 8), voxel_size=12.0)


@pytest.fixture(scope="module")
def model():
    vols, tabs = zip(*[synthetic(s) for s in range(3)])
    v, t = synthetic(10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return train_picker(list(vols), list(tabs), PickerConfig(**CFG), epochs=8, batch_size=4, lr=3e-3,
                            val_tomograms=[v], val_tables=[t], val_every=2, seed=0)


def test_picker_learns_synthetic_particles(model):
    vol, truth = synthetic(99)
    res = pick(vol, model)
    ev = evaluate_picks(res.picks, truth, 2.0)
    assert ev["f1"] >= 0.9, ev
    hist = model.metrics["history"]
    assert hist[-1]["loss"] < hist[0]["loss"] - 0.1
    assert model.metrics["best_val_f1"] == max(h["val_f1"] for h in hist if h["val_f1"] == h["val_f1"])
    # trained in channels-last memory on CPU, handed back (and saved) in the default layout
    assert all(w.is_contiguous() for w in model.network.parameters())


def test_channels_last_training_step_is_the_same_function():
    """The CPU training layout (NDHWC) changes speed, not the loss or the gradients (to float rounding)."""
    from napari_bioid.engine.tomo.training import soft_dice_loss
    from napari_bioid.engine.train import training_layout

    cfg = PickerConfig(**CFG)
    torch.manual_seed(0)
    a = cfg.build_network().train()
    b = cfg.build_network().train()
    b.load_state_dict(a.state_dict())
    layout = training_layout(torch.device("cpu"), 3)
    assert layout == torch.channels_last_3d and training_layout(torch.device("cuda"), 3) == torch.contiguous_format
    b.to(memory_format=layout)
    x = torch.randn(2, 1, 24, 24, 24)
    y = torch.randint(0, 2, (2, 24, 24, 24))
    la, lb = soft_dice_loss(a(x), y), soft_dice_loss(b(x.contiguous(memory_format=layout)), y)
    la.backward(), lb.backward()
    assert float(la.detach()) == pytest.approx(float(lb.detach()), abs=1e-5)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.allclose(pa.grad, pb.grad, atol=1e-5, rtol=1e-3)


_STRIDED_1X1_TRAINING = """
import torch, torch.nn.functional as F
from napari_bioid.engine.nn.resnet import resnet
torch.set_num_threads(2)
torch.manual_seed(0)
net = resnet(18, 2, 8).to(memory_format=torch.channels_last)
opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
for _ in range(60):  # batches of 3 (an epoch's odd last batch), as the polarity trainer gives them
    x = torch.randn(3, 3, 48, 48).contiguous(memory_format=torch.channels_last)
    loss = F.cross_entropy(net(x), torch.randint(0, 2, (3,)))
    opt.zero_grad()
    loss.backward()
    opt.step()
print("trained")
"""


def test_resnet_shortcut_trains_channels_last_without_corrupting_memory():
    """PyTorch 2.13's CPU weight gradient of a strided 1×1 convolution on channels-last tensors corrupts the heap for
    4 or 8 input channels and odd batches (this script crashed with the plain nn.Conv2d shortcut: "corrupted size vs.
    prev_size" or a segmentation fault). The ResNet's shortcut computes the same function another way."""
    import subprocess
    import sys

    from napari_bioid.engine.nn.resnet import StridedPointwise

    res = subprocess.run([sys.executable, "-c", _STRIDED_1X1_TRAINING], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and "trained" in res.stdout, (res.returncode, res.stderr[-500:])
    # the same layer as nn.Conv2d(cin, cout, 1, stride): output, gradients and state-dict keys, odd and even sizes
    torch.manual_seed(0)
    plain, ours = torch.nn.Conv2d(8, 16, 1, 2, bias=False), StridedPointwise(8, 16, 2)
    ours.load_state_dict(plain.state_dict())
    for size in (12, 13):
        x = torch.randn(3, 8, size, size, requires_grad=True)
        a, b = plain(x), ours(x)
        assert a.shape == b.shape == (3, 16, (size + 1) // 2, (size + 1) // 2) and torch.allclose(a, b, atol=1e-6)
        ga = torch.autograd.grad(a.square().sum(), (x, plain.weight))
        gb = torch.autograd.grad(b.square().sum(), (x, ours.weight))
        assert all(torch.allclose(u, v, atol=1e-5) for u, v in zip(ga, gb))


def test_model_file_round_trip_and_voxel_size_warning(model, tmp_path):
    path = model.save(tmp_path / "m.pt")
    with pytest.raises(FileExistsError):
        model.save(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = load_picker(path, voxel_size=12.0)
    assert loaded.config == model.config
    vol, _ = synthetic(5)
    a, b = pick(vol, model).picks, pick(vol, loaded).picks
    np.testing.assert_allclose(a[["x", "y", "z", "score"]], b[["x", "y", "z", "score"]])
    with pytest.warns(UserWarning, match="trained at 12 Å/voxel"):
        load_picker(path, voxel_size=20.0)
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(BioidInputError, match="not a napari-bioid model"):
        load_picker(tmp_path / "other.pt")


def test_refilter_changes_picks_without_rerunning(model):
    vol, _ = synthetic(7)
    res = pick(vol, model)
    n = len(res.picks)
    assert len(res.refilter(min_score=1.1)) == 0
    assert len(res.refilter(min_score=0.0, distance=0.5)) >= n


def test_training_cancel_and_bad_classes():
    vol, tab = synthetic(1)
    flag = threading.Event()
    calls = []

    def progress(done, total, msg):
        calls.append(done)
        if done >= 2:
            flag.set()

    with pytest.raises(Cancelled):
        train_picker([vol], [tab], PickerConfig(**CFG), epochs=3, batch_size=2, val_tomograms=[vol], val_tables=[tab], progress=progress, cancel=flag)
    assert max(calls) == 2
    tab2 = tab.copy()
    tab2.loc[0, "class_id"] = 3
    with pytest.raises(BioidInputError, match="not among the model's classes"):
        train_picker([vol], [tab2], PickerConfig(**CFG), epochs=1, val_tomograms=[vol], val_tables=[tab])
