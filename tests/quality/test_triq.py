"""TRIQ: the 5-bin targets and loss by hand, padded batch vs one image at a time, position table
truncation / interpolation / error, the pooling rule, input conventions, local weights, ONNX.
Tiny models: timm's ``test_resnet`` (C5 stride 32: 64 px -> 2x2 tokens)."""

from __future__ import annotations

import dataclasses

import pytest
import timm
import torch

from percepta.errors import DataError, PerceptaError
from percepta.quality.triq import TRIQConfig, build_triq, soft_levels

# the tests export through torch.onnx's TorchScript exporter, as percepta.export does (which
# silences the same deprecation notice)
pytestmark = [
    pytest.mark.filterwarnings("ignore:You are using the legacy TorchScript-based ONNX export"),
    pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning"),
    pytest.mark.filterwarnings("ignore:The feature will be removed:DeprecationWarning"),
]


TINY = TRIQConfig(backbone="test_resnet", max_grid=[3, 3], score_range=[1.0, 5.0])


def _u8(*shape: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, shape, generator=g, dtype=torch.uint8)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_triq(TINY).eval()


def test_soft_levels_by_hand():
    unit = torch.tensor([0.0, 1.0, 0.575, 0.5, -0.2])  # m = 1, 5, 3.3, 3, (clamped) 1
    expected = torch.tensor(
        [
            [1.0, 0.0, 0.0, 0.0, 0.0],
            [0.0, 0.0, 0.0, 0.0, 1.0],
            [0.0, 0.0, 0.7, 0.3, 0.0],
            [0.0, 0.0, 1.0, 0.0, 0.0],
            [1.0, 0.0, 0.0, 0.0, 0.0],
        ]
    )
    torch.testing.assert_close(soft_levels(unit), expected, atol=1e-6, rtol=0)


def test_loss_is_cross_entropy_on_the_two_hot_target():
    torch.manual_seed(0)
    model = build_triq(dataclasses.replace(TINY, dropout=0.0)).train()
    images = _u8(2, 3, 64, 64, seed=1)
    targets = [{"score": torch.tensor(3.0)}, {"score": torch.tensor(4.2)}]  # m = 3.0, 4.2
    loss = model(images, targets)["loss_distribution"]
    logp = model.logits(model._sequences(list(images.float() / 255))).log_softmax(-1)
    by_hand = -(logp[0, 2] + 0.8 * logp[1, 3] + 0.2 * logp[1, 4]) / 2
    torch.testing.assert_close(loss, by_hand, atol=1e-5, rtol=0)
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.backbone.parameters())


def test_score_is_the_expectation_mapped_to_the_score_range(model):
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0, 0.0], [10.0, -10.0, -10.0, -10.0, -10.0]])
    # uniform -> E = 3 -> 1 + 4 * 0.5 = 3; all mass on level 1 -> score 1
    torch.testing.assert_close(model._score(logits), torch.tensor([3.0, 1.0]), atol=1e-4, rtol=0)


def test_padded_batch_equals_one_image_at_a_time(model):
    """Tolerance 1e-5. Sizes 64x96 (2x3 tokens), 96x64 (3x2), 64x64 (2x2): padding to 7."""
    images = [_u8(3, 64, 96, seed=2), _u8(3, 96, 64, seed=3), _u8(3, 64, 64, seed=4)]
    with torch.no_grad():
        batched = [p["score"] for p in model(images)]
        single = [model([im])[0]["score"] for im in images]
        # the test is not void: without the mask the padded zeros change the short image's score
        seqs = model._sequences([im.float() / 255 for im in images])
        padded = torch.nn.utils.rnn.pad_sequence(seqs, batch_first=True)
        unmasked = model._score(model.head(model.encoder(padded)[:, 0]))
    for b, s in zip(batched, single):
        torch.testing.assert_close(b, s, atol=1e-5, rtol=0)
    assert abs(float(unmasked[2] - single[2])) > 1e-4


def test_position_truncation_and_its_error(model):
    torch.testing.assert_close(model.position(2, 3), model.pos[0, :7], atol=0, rtol=0)
    with pytest.raises(DataError, match="max_grid"):
        model([_u8(3, 128, 128, seed=5)])  # 4x4 = 16 tokens > 9


def test_position_interpolation():
    torch.manual_seed(0)
    model = build_triq(dataclasses.replace(TINY, max_grid=[2, 2], position_mode="interpolate"))
    table = model.pos[0].detach()
    torch.testing.assert_close(model.position(2, 2).detach(), table, atol=0, rtol=0)
    one = model.position(1, 1).detach()  # bilinear 2x2 -> 1x1 (half-pixel): the mean of 4 rows
    torch.testing.assert_close(one[0], table[0], atol=0, rtol=0)
    torch.testing.assert_close(one[1], table[1:].mean(0), atol=1e-6, rtol=0)
    model.eval()
    with torch.no_grad():
        (p,) = model([_u8(3, 128, 160, seed=6)])  # 4x5 tokens, beyond the 2x2 table
    assert torch.isfinite(p["score"])


def test_pooling_rule():
    """2x2 max-pool when the C5 height is >= pool_from (3 here): 96x64 -> 3x2 -> 1x1."""
    torch.manual_seed(0)
    model = build_triq(dataclasses.replace(TINY, pool_from=3)).eval()
    with torch.no_grad():
        tall = model.features(torch.rand(1, 3, 96, 64))
        wide = model.features(torch.rand(1, 3, 64, 96))
        raw = model.proj(model.backbone((torch.rand(1, 3, 96, 64) - 0.5) / 0.5))
    assert raw.shape[-2:] == (3, 2) and tall.shape[-2:] == (1, 1)
    assert wide.shape[-2:] == (2, 3)  # height 2 < 3: not pooled (width is never tested)
    x = torch.rand(1, 3, 96, 64)
    with torch.no_grad():
        raw = model.proj(model.backbone((x - model.pixel_mean) / model.pixel_std))
        torch.testing.assert_close(model.features(x), raw[..., :2, :2].amax((-2, -1), True))


def test_post_ln_layers_and_standard_heads(model):
    assert all(layer.norm_first is False for layer in model.encoder.layers)
    assert model.encoder.norm is None
    layer = model.encoder.layers[0]
    assert layer.self_attn.head_dim == TINY.d_model // TINY.num_heads
    assert layer.norm1.eps == 1e-6


def test_uint8_and_float_inputs_agree(model):
    images = _u8(2, 3, 64, 96, seed=7)
    with torch.no_grad():
        a, b = model(images), model(images.float() / 255)
    for p, q in zip(a, b):
        torch.testing.assert_close(p["score"], q["score"], atol=1e-6, rtol=0)


def test_local_pretrained_weights_load(tmp_path):
    torch.manual_seed(321)
    state = timm.create_model("test_resnet").state_dict()
    torch.save(state, tmp_path / "w.pth")
    model = build_triq(dataclasses.replace(TINY, pretrained_path=str(tmp_path / "w.pth")))
    loaded = model.backbone.body.state_dict()
    assert len(loaded) > 10
    for k, v in loaded.items():
        assert torch.equal(v, state[k]), k
    torch.save({"conv1.0.weight": state["conv1.0.weight"]}, tmp_path / "partial.pth")
    with pytest.raises(PerceptaError):
        build_triq(dataclasses.replace(TINY, pretrained_path=str(tmp_path / "partial.pth")))


def test_missing_score_range_is_a_clear_error():
    with pytest.raises(PerceptaError, match="score_range"):
        build_triq(dataclasses.replace(TINY, score_range=[]))


def test_onnx_export_matches_pytorch(model, tmp_path):
    """score_batch at 64x96, legacy TorchScript exporter; tolerance 1e-4."""
    ort = pytest.importorskip("onnxruntime")

    class Batch(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            return self.m.score_batch(x)

    x = _u8(2, 3, 64, 96, seed=8).float() / 255
    wrapper = Batch(model).eval()
    path = tmp_path / "triq.onnx"
    torch.onnx.export(wrapper, (x,), str(path), dynamo=False, opset_version=17)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        expected = wrapper(x)
        assert torch.allclose(expected, torch.stack([p["score"] for p in model(x)]), atol=1e-5)
    torch.testing.assert_close(torch.from_numpy(got), expected, atol=1e-4, rtol=0)
