"""Quality-token attention: the captured weights equal an independent recomputation
(``softmax(Q K^T / sqrt(d))`` from the layer's own parameters, heads averaged, by hand), the
capture leaves the score unchanged, the maps are assembled as documented (crops averaged where
they overlap, the token grid after TRIQ's pooling) and the overlay PNG has the documented
pixels. Tiny models (timm's ``test_resnet``); tolerance 1e-5 (float32, different op order)."""

from __future__ import annotations

import math

import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image
from torch.nn import functional as F

from percepta.errors import DataError, PerceptaError
from percepta.quality.attention import (
    QualityTokenAttention,
    attention_map,
    save_overlay,
    score_and_attention,
)
from percepta.quality.iqt import IQTConfig, build_iqt
from percepta.quality.triq import TRIQConfig, build_triq

TOL = 1e-5


def _u8(*shape: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, shape, generator=g, dtype=torch.uint8)


@pytest.fixture(scope="module")
def iqt():
    torch.manual_seed(0)
    cfg = IQTConfig(
        backbone="test_resnet",
        crop_size=32,
        d_model=16,
        num_layers=2,
        num_heads=2,
        ffn_dim=32,
        head_dim=8,
        test_crops=2,
        score_range=[1.0, 5.0],
    )
    return build_iqt(cfg).eval()


@pytest.fixture(scope="module")
def triq():
    torch.manual_seed(1)
    cfg = TRIQConfig(
        backbone="test_resnet",
        d_model=16,
        num_layers=2,
        num_heads=4,
        ffn_dim=32,
        head_dim=16,
        pool_from=4,  # test_resnet has stride 32: 128 px -> 4 cells -> pooled to 2
        max_grid=[4, 4],
        score_range=[1.0, 5.0],
    )
    return build_triq(cfg).eval()


# ------------------------------------------------------------------ independent recomputation
def _rows_by_hand(mha: torch.nn.MultiheadAttention, query: torch.Tensor, keys: torch.Tensor):
    """Quality-token row ``[B, S]``: Q = x Wq^T + bq, K = m Wk^T + bk, per head
    softmax(Q K^T / sqrt(d_head)), mean over heads, query 0."""
    d, h = mha.embed_dim, mha.num_heads
    w, b = mha.in_proj_weight, mha.in_proj_bias
    q = query @ w[:d].T + b[:d]
    k = keys @ w[d : 2 * d].T + b[d : 2 * d]
    q = q.reshape(q.shape[0], q.shape[1], h, d // h).permute(0, 2, 1, 3)
    k = k.reshape(k.shape[0], k.shape[1], h, d // h).permute(0, 2, 1, 3)
    logits = q @ k.transpose(-1, -2) / math.sqrt(d // h)
    return torch.softmax(logits, dim=-1).mean(1)[:, 0]


def _tokens(feat, token, pos):
    x = feat.flatten(2).transpose(1, 2)
    return torch.cat([token.expand(len(x), -1, -1), x], 1) + pos


def _iqt_rows_by_hand(model, dist, ref):
    """Every decoder layer's cross-attention row of the quality token, inputs built by hand."""
    x = (torch.cat([ref, dist]) - model.pixel_mean) / model.pixel_std
    f_ref, f_dist = model.backbone(x).chunk(2)
    memory = model.encoder(_tokens(model.proj_enc(f_ref - f_dist), model.token_enc, model.pos_enc))
    y = _tokens(model.proj_dec(f_ref), model.token_dec, model.pos_dec)
    rows = []
    for layer in model.decoder.layers:  # post-LN: the query of cross-attention is norm1(...)
        q_in = layer.norm1(y + layer.self_attn(y, y, y, need_weights=False)[0])
        rows.append(_rows_by_hand(layer.multihead_attn, q_in, memory))
        y = layer(y, memory)
    return rows


def _triq_rows_by_hand(model, x):
    f = model.features((x.float() / 255)[None])
    y = _tokens(f, model.token, model.position(f.shape[-2], f.shape[-1]))
    rows = []
    for layer in model.encoder.layers:
        rows.append(_rows_by_hand(layer.self_attn, y, y))
        y = layer(y)
    return rows, tuple(f.shape[-2:])


def test_iqt_captured_weights_equal_the_recomputation(iqt):
    d = _u8(3, 3, 32, 32, seed=1).float() / 255
    r = _u8(3, 3, 32, 32, seed=2).float() / 255
    with torch.no_grad():
        expected = _iqt_rows_by_hand(iqt, d, r)
        with QualityTokenAttention(iqt, layers="all") as cap:
            iqt.score_crops(d, r)
    assert len(cap.rows) == 2 and all(len(r) == 1 for r in cap.rows)
    for got, want in zip(cap.rows, expected):
        assert got[0].shape == (3, 17)  # 4x4 grid + the encoder's quality token
        torch.testing.assert_close(got[0], want, atol=TOL, rtol=0)
    torch.testing.assert_close(cap.last_rows(), (expected[0] + expected[1]) / 2, atol=TOL, rtol=0)
    with torch.no_grad(), QualityTokenAttention(iqt) as last:  # default: the last layer only
        iqt.score_crops(d, r)
    torch.testing.assert_close(last.last_rows(), expected[1], atol=TOL, rtol=0)


def test_triq_captured_weights_equal_the_recomputation(triq):
    x = _u8(3, 128, 160, seed=3)
    with torch.no_grad():
        expected, grid = _triq_rows_by_hand(triq, x)
        with QualityTokenAttention(triq, layers="all") as cap:
            triq.score_batch((x.float() / 255)[None])
    assert grid == (2, 2)  # 4x5 C5 cells, pooled 2x2 (floor)
    for got, want in zip(cap.rows, expected):
        assert got[0].shape == (1, 5)
        torch.testing.assert_close(got[0], want, atol=TOL, rtol=0)


def test_capture_leaves_the_score_unchanged_and_removes_its_hooks(iqt, triq):
    d, r = _u8(3, 40, 48, seed=4), _u8(3, 40, 48, seed=5)
    x = _u8(3, 96, 128, seed=6)
    with torch.no_grad():
        plain_iqt = float(iqt([d], [{"reference": r}])[0]["score"])
        plain_triq = float(triq([x])[0]["score"])
    s_iqt, _ = score_and_attention(iqt, d, r)
    s_triq, _ = score_and_attention(triq, x)
    assert s_iqt == pytest.approx(plain_iqt, abs=TOL)
    assert s_triq == pytest.approx(plain_triq, abs=TOL)
    for model in (iqt, triq):
        assert not any(m._forward_hooks for m in model.modules())
        assert not model.training


def test_iqt_map_averages_the_crops_where_they_overlap(iqt):
    # 32x48 image, crop 32, 2 crops: offsets (0, 0) and (0, 16) (grid_offsets, by hand)
    d, r = _u8(3, 32, 48, seed=7), _u8(3, 32, 48, seed=8)
    amap = attention_map(iqt, d, r)
    assert amap.shape == (32, 48) and amap.dtype == np.float32
    crops_d = torch.stack([d[:, :, :32], d[:, :, 16:]]).float() / 255
    crops_r = torch.stack([r[:, :, :32], r[:, :, 16:]]).float() / 255
    with torch.no_grad():
        row = _iqt_rows_by_hand(iqt, crops_d, crops_r)[-1]
    patches = row[:, 1:] / row[:, 1:].sum(1, keepdim=True)
    up = F.interpolate(patches.reshape(2, 1, 4, 4), size=(32, 32), mode="bilinear")[:, 0]
    want = torch.zeros(32, 48)
    want[:, :16] = up[0, :, :16]
    want[:, 16:32] = (up[0, :, 16:] + up[1, :, :16]) / 2
    want[:, 32:] = up[1, :, 16:]
    np.testing.assert_allclose(amap, want.numpy(), atol=TOL, rtol=0)


def test_iqt_map_of_an_image_smaller_than_the_crop_has_the_image_size(iqt):
    d, r = _u8(3, 24, 30, seed=9), _u8(3, 24, 30, seed=10)
    amap = attention_map(iqt, d, r)
    assert amap.shape == (24, 30) and np.isfinite(amap).all() and (amap > 0).all()


def test_triq_map_is_the_pooled_grid_resized_to_the_image(triq):
    x = _u8(3, 128, 160, seed=11)
    amap = attention_map(triq, x)
    with torch.no_grad():
        rows, grid = _triq_rows_by_hand(triq, x)
    patches = rows[-1][:, 1:] / rows[-1][:, 1:].sum(1, keepdim=True)
    want = F.interpolate(patches.reshape(1, 1, *grid), size=(128, 160), mode="bilinear")[0, 0]
    np.testing.assert_allclose(amap, want.numpy(), atol=TOL, rtol=0)
    # bilinear resizing keeps the values within the grid's range; the patch weights sum to 1
    assert float(patches.sum()) == pytest.approx(1.0, abs=1e-6)


def test_unpooled_triq_grid(triq):
    x = _u8(3, 96, 96, seed=12)  # 3x3 cells < pool_from: no pooling, 9 patches
    amap = attention_map(triq, x)
    with torch.no_grad():
        rows, grid = _triq_rows_by_hand(triq, x)
    assert grid == (3, 3)
    patches = rows[-1][:, 1:] / rows[-1][:, 1:].sum(1, keepdim=True)
    want = F.interpolate(patches.reshape(1, 1, 3, 3), size=(96, 96), mode="bilinear")[0, 0]
    np.testing.assert_allclose(amap, want.numpy(), atol=TOL, rtol=0)


def test_overlay_pixels(tmp_path):
    img = _u8(3, 20, 30, seed=13)
    amap = np.zeros((20, 30), np.float32)
    amap[5, 7] = 2.0  # the maximum
    amap[10, 3] = -1.0  # the minimum
    masked = np.asarray(Image.open(save_overlay(img, amap, tmp_path / "m.png", style="mask")))
    rgb = img.permute(1, 2, 0).numpy()
    assert masked.shape == (20, 30, 3)
    assert (masked[5, 7] == rgb[5, 7]).all()  # x 1 at the maximum
    assert (masked[10, 3] == 0).all()  # x 0 at the minimum
    # elsewhere the map is 0, i.e. 1/3 of the way from -1 to 2
    assert np.abs(masked[0, 0].astype(float) - rgb[0, 0] / 3).max() <= 0.5 + 1e-9
    heat = np.asarray(Image.open(save_overlay(img, amap, tmp_path / "h.png", alpha=0.25)))
    colour = np.array(matplotlib.colormaps["jet"](1.0)[:3]) * 255
    want = 0.75 * rgb[5, 7].astype(float) + 0.25 * colour
    assert np.abs(heat[5, 7] - want).max() <= 0.5 + 1e-6
    assert (tmp_path / "h.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_errors_are_one_line_and_name_the_problem(iqt, triq, tmp_path):
    d = _u8(3, 32, 32, seed=14)
    with pytest.raises(DataError, match="full-reference"):
        attention_map(iqt, d)
    with pytest.raises(DataError, match="reference is"):
        attention_map(iqt, d, _u8(3, 32, 40, seed=15))
    with pytest.raises(DataError, match="no-reference"):
        attention_map(triq, _u8(3, 64, 64, seed=16), d)
    with pytest.raises(PerceptaError, match="IQT, TRIQ"):
        attention_map(torch.nn.Linear(2, 2), d)
    with pytest.raises(PerceptaError, match="layers"):
        attention_map(triq, _u8(3, 64, 64, seed=16), layers="first")
    with pytest.raises(DataError, match="does not match"):
        save_overlay(d, np.zeros((4, 4)), tmp_path / "x.png")
    with pytest.raises(PerceptaError, match="colormap"):
        save_overlay(d, np.zeros((32, 32)), tmp_path / "x.png", cmap="no_such_map")
