"""MOTIFS (Zellers et al., CVPR 2018, "Neural Motifs") as in Scene-Graph-Benchmark.pytorch.

Restates ``model_motifs.LSTMContext`` / ``DecoderRNN`` and ``MotifPredictor`` of
KaihuaTang/Scene-Graph-Benchmark.pytorch @ 6f75881a (project notes ``sgg.md`` §3.3 and
``sgg_official_semantics.md`` "CausalAnalysisPredictor in eval mode"; nothing copied), and
reproduces the official module's outputs (``tests/scene_graph/test_motifs.py``).

Class indices inside this module are the official ones: **0 = background, objects 1..C,
predicates 1..R** (``num_classes = C + 1`` object logits, ``R + 1`` relation logits). The
relation model (:mod:`percepta.scene_graph.model`) converts percepta's 0..C-1 labels at its
boundary.

**Object context** (:class:`LSTMContext`). Per object ``[x, label embedding, pos_embed(box)]``
(:mod:`percepta.scene_graph.features`); the label embedding is ``obj_embed1(label)`` in PredCls
and ``softmax(detector logits) @ obj_embed1.weight`` in SGCls/SGDet. The objects of an image
form one sequence sorted by box centre x, **descending** (``cx = (x1 + x2) / 2``; ties keep the
input order: a stable sort). A bidirectional LSTM over each sequence, then ``lin_obj_h``
(2H -> H) gives the object context. SGCls/SGDet decode labels with :class:`DecoderRNN` (a
highway LSTM over ``[input, object context]`` fed with the previous label's embedding, ``+1``
offset, index 0 = "start"): teacher-forced with the GT labels in training (background labels
replaced by the prediction), greedy at test (best of classes 1..C), then in SGDet a greedy
per-class NMS over the decoded distributions and the detector's class boxes
(``LATER_NMS_PREDICTION_THRES``, default 0.3). PredCls uses the GT labels and
``to_onehot(labels, fill=1000)`` as object logits. The edge context is a second BiLSTM over
``[obj_embed2(label), x, object context]`` in the same order, then ``lin_edge_h``.

The official ``sort_by_score`` (at 6f75881a) offsets each image's scores so that the images
of a batch form separate packed sequences, longest first; the sequences here are the same (one
per image; the batch order of the sequences does not change any output). The official
``torch.sort`` is not declared stable; equal centres (exact ties) keep the input order here.

**Relation logits** (:class:`MotifsPredictor`). ``post_emb`` (H -> 2H) splits the edge context
into head/tail halves; a pair's ``prod = [head(subject), tail(object)]``, ``post_cat(prod)``
(2H -> pooling dim). Three fusions:

* ``"motifs"`` (default, standard ``MotifPredictor``):
  ``rel = rel_compress(post_cat(prod) * union) + freq_bias(s, o)``;
* ``"sum"`` (the factual logits of ``CausalAnalysisPredictor``, MOTIFS context):
  ``c = ReLU(post_cat(prod))``, ``rel = vis_compress(union) + ctx_compress(c) + freq_bias``;
* ``"gate"``: ``rel = ctx_compress(c) * sigmoid(vis_compress(union) + freq_bias +
  ctx_gate_fc(c))``.

The frequency bias is indexed with the pair's predicted labels (:class:`FrequencyBias`); the
causal effects (TDE/NIE/TE) are not part of this module. Training adds, for the causal
fusions, the official auxiliary logits (``ctx``, and for ``sum`` also ``vis`` and ``frq``).

**Official weights.** Parameter names follow the official module, so
:func:`official_state_dict` maps an official ``state_dict`` (MotifPredictor or
CausalAnalysisPredictor with the MOTIFS context) onto this module by :data:`OFFICIAL_KEY_MAP`
(only ``post_cat.0.* -> post_cat.*``; the frequency bias keeps ``freq_bias.obj_baseline``),
dropping :data:`OFFICIAL_UNUSED_PREFIXES` (the causal moving averages and the spatial
embedding, unused by the factual outputs; the decoder in PredCls, which never runs there).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence, pad_sequence

from percepta.scene_graph.features import class_word_vectors, encode_box_info, pos_embed
from percepta.scene_graph.frequency import FrequencyBias
from percepta.scene_graph.postprocess import obj_prediction_nms

__all__ = [
    "MODES",
    "FUSIONS",
    "to_onehot",
    "context_sequences",
    "DecoderRNN",
    "LSTMContext",
    "MotifsOutput",
    "MotifsPredictor",
    "OFFICIAL_KEY_MAP",
    "OFFICIAL_UNUSED_PREFIXES",
    "official_state_dict",
]

MODES = ("predcls", "sgcls", "sgdet")
FUSIONS = ("motifs", "sum", "gate")


def to_onehot(labels: torch.Tensor, num_classes: int, fill: float = 1000.0) -> torch.Tensor:
    """``[n, num_classes]`` logits: ``fill`` at each label, ``-fill`` elsewhere (official)."""
    out = torch.full((labels.numel(), num_classes), -fill, device=labels.device)
    out[torch.arange(labels.numel(), device=labels.device), labels.long()] = fill
    return out


def context_sequences(boxes: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """The LSTM sequences: per image with objects, its global object indices (into the
    concatenated boxes) by box centre x, descending (stable sort)."""
    out, offset = [], 0
    for b in boxes:
        n = int(b.shape[0])
        if n:
            cx = 0.5 * (b[:, 0] + b[:, 2])
            out.append(torch.sort(cx, descending=True, stable=True).indices + offset)
        offset += n
    return out


def _run_bilstm(lstm: nn.LSTM, feats: torch.Tensor, seqs: Sequence[torch.Tensor]) -> torch.Tensor:
    """Run ``lstm`` over each index sequence of ``feats``; outputs back in object order."""
    out = feats.new_zeros(feats.shape[0], lstm.hidden_size * (2 if lstm.bidirectional else 1))
    if not seqs:
        return out
    lengths = torch.tensor([len(s) for s in seqs])
    padded = pad_sequence([feats[s] for s in seqs])  # [T, B, D]
    packed = pack_padded_sequence(padded, lengths, enforce_sorted=False)
    res, _ = pad_packed_sequence(lstm(packed)[0])  # [T, B, 2H]
    valid = torch.arange(res.shape[0])[None, :] < lengths[:, None]  # [B, T]
    out[torch.cat(list(seqs))] = res.transpose(0, 1)[valid.to(res.device)]
    return out


class DecoderRNN(nn.Module):
    """The official highway-LSTM object decoder (one step per object of a sequence).

    Args:
        num_classes: object logits ``C + 1`` (background included).
        embed_dim: label embedding size; ``obj_embed`` has ``C + 2`` rows ("start" + classes,
            label ``l`` at row ``l + 1``).
        inputs_dim: per-step input size (object input + object context).
        hidden_dim, dropout: LSTM state size; dropout of the outputs in training (one mask per
            sequence, fixed over the steps, as the official ``get_dropout_mask``).
    """

    def __init__(
        self,
        num_classes: int,
        embed_dim: int,
        inputs_dim: int,
        hidden_dim: int,
        dropout: float = 0.2,
        embed_init: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        self.num_classes, self.hidden_size, self.embed_dim = num_classes, hidden_dim, embed_dim
        self.dropout = float(dropout)
        self.obj_embed = nn.Embedding(num_classes + 1, embed_dim)
        if embed_init is not None:
            with torch.no_grad():
                self.obj_embed.weight.copy_(embed_init)
        self.input_linearity = nn.Linear(inputs_dim + embed_dim, 6 * hidden_dim)
        self.state_linearity = nn.Linear(hidden_dim, 5 * hidden_dim)
        self.out_obj = nn.Linear(hidden_dim, num_classes)
        nn.init.zeros_(self.input_linearity.bias)
        nn.init.zeros_(self.state_linearity.bias)

    def _step(
        self, x: torch.Tensor, state: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.hidden_size
        pi, ps = self.input_linearity(x), self.state_linearity(state)
        i_gate = torch.sigmoid(pi[:, :h] + ps[:, :h])
        f_gate = torch.sigmoid(pi[:, h : 2 * h] + ps[:, h : 2 * h])
        cand = torch.tanh(pi[:, 2 * h : 3 * h] + ps[:, 2 * h : 3 * h])
        o_gate = torch.sigmoid(pi[:, 3 * h : 4 * h] + ps[:, 3 * h : 4 * h])
        memory = i_gate * cand + f_gate * memory
        out = o_gate * torch.tanh(memory)
        highway = torch.sigmoid(pi[:, 4 * h : 5 * h] + ps[:, 4 * h : 5 * h])
        out = highway * out + (1 - highway) * pi[:, 5 * h : 6 * h]
        if mask is not None and self.training:
            out = out * mask
        return out, memory

    def forward(
        self, inputs: torch.Tensor, seqs: Sequence[torch.Tensor], labels: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``inputs [N, D]`` decoded along ``seqs`` -> ``(logits [N, C+1], labels [N])``.

        ``labels`` (training): teacher forcing; 0 (background) steps feed the prediction.
        """
        n_all = inputs.shape[0]
        dists = inputs.new_zeros(n_all, self.num_classes)
        preds = torch.zeros(n_all, dtype=torch.long, device=inputs.device)
        if not seqs:
            return dists, preds
        seqs = sorted(seqs, key=len, reverse=True)  # stable: equal lengths keep their order
        lengths = [len(s) for s in seqs]
        batch = len(seqs)
        state = inputs.new_zeros(batch, self.hidden_size)
        memory = inputs.new_zeros(batch, self.hidden_size)
        prev = self.obj_embed.weight[0:1].expand(batch, self.embed_dim)
        mask = None
        if self.training and self.dropout > 0:
            keep = torch.rand(batch, self.hidden_size) > self.dropout
            mask = keep.float().to(inputs.device) / (1.0 - self.dropout)
        for t in range(lengths[0]):
            nb = sum(1 for length in lengths if length > t)
            idx = torch.stack([seqs[b][t] for b in range(nb)])
            x = torch.cat([inputs[idx], prev[:nb]], dim=1)
            state, memory = self._step(
                x, state[:nb], memory[:nb], None if mask is None else mask[:nb]
            )
            logits = self.out_obj(state)
            dists[idx] = logits
            if self.training and labels is not None:
                step = labels[idx].clone()
                best = logits[:, 1:].argmax(1) + 1
                step = torch.where(step == 0, best, step)
            else:
                step = F.softmax(logits, dim=1)[:, 1:].argmax(1) + 1
            preds[idx] = step
            prev = self.obj_embed(step + 1)
        return dists, preds


class LSTMContext(nn.Module):
    """Object and edge context of MOTIFS (see the module docstring).

    Args:
        mode: ``"predcls"``, ``"sgcls"`` or ``"sgdet"`` (the decoder exists only in the last two).
        class_names: ``C + 1`` names, background first (for the word vectors).
        obj_dim: size of the object features ``x``.
        embed_dim, hidden_dim: label embedding and LSTM sizes (official 200, 512).
        dropout: official ``CONTEXT_DROPOUT_RATE`` (between stacked LSTM layers, decoder output).
        obj_layers, edge_layers: stacked BiLSTM layers (official 1, 1).
        nms_thresh: SGDet label NMS threshold (official ``LATER_NMS_PREDICTION_THRES``).
        glove_path: optional local word-vector text file for the initial embeddings.
    """

    def __init__(
        self,
        mode: str,
        class_names: Sequence[str],
        obj_dim: int,
        embed_dim: int = 200,
        hidden_dim: int = 512,
        dropout: float = 0.2,
        obj_layers: int = 1,
        edge_layers: int = 1,
        nms_thresh: float = 0.3,
        glove_path: str | None = None,
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.mode, self.nms_thresh = mode, float(nms_thresh)
        self.num_classes = len(class_names)
        vecs, _ = class_word_vectors(list(class_names), embed_dim, glove_path)
        self.obj_embed1 = nn.Embedding(self.num_classes, embed_dim)
        self.obj_embed2 = nn.Embedding(self.num_classes, embed_dim)
        with torch.no_grad():
            self.obj_embed1.weight.copy_(vecs)
            self.obj_embed2.weight.copy_(vecs)
        self.pos_embed = pos_embed()
        pos_dim = 128
        self.hidden_dim = hidden_dim
        self.obj_ctx_rnn = nn.LSTM(
            obj_dim + embed_dim + pos_dim,
            hidden_dim,
            num_layers=obj_layers,
            dropout=dropout if obj_layers > 1 else 0.0,
            bidirectional=True,
        )
        if mode != "predcls":
            start = class_word_vectors(["start", *class_names], embed_dim, glove_path)[0]
            self.decoder_rnn = DecoderRNN(
                self.num_classes,
                embed_dim,
                hidden_dim + obj_dim + embed_dim + pos_dim,
                hidden_dim,
                dropout,
                embed_init=start,
            )
        self.edge_ctx_rnn = nn.LSTM(
            embed_dim + hidden_dim + obj_dim,
            hidden_dim,
            num_layers=edge_layers,
            dropout=dropout if edge_layers > 1 else 0.0,
            bidirectional=True,
        )
        self.lin_obj_h = nn.Linear(2 * hidden_dim, hidden_dim)
        self.lin_edge_h = nn.Linear(2 * hidden_dim, hidden_dim)

    def forward(
        self,
        x: torch.Tensor,
        boxes: Sequence[torch.Tensor],
        image_sizes: Sequence[tuple[int, int]],
        labels: torch.Tensor | None = None,
        det_logits: torch.Tensor | None = None,
        boxes_per_cls: Sequence[torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(obj_dists [N, C+1], obj_preds [N], edge_ctx [N, H])`` for the objects of a batch.

        Args:
            x: ``[N, obj_dim]`` object features, images concatenated in order.
            boxes: per image ``[n_i, 4]`` XYXY pixels; ``image_sizes``: per image ``(h, w)``.
            labels: ``[N]`` object labels 1..C (PredCls: required; SGCls/SGDet training: the
                decoder's teacher labels, 0 = background proposal).
            det_logits: ``[N, C+1]`` detector class logits (SGCls/SGDet soft label embedding;
                ``None``: uniform).
            boxes_per_cls: SGDet test: per image ``[n_i, C+1, 4]`` class boxes for the NMS.
        """
        pos = self.pos_embed(
            torch.cat([encode_box_info(b, s) for b, s in zip(boxes, image_sizes)], 0)
            if len(boxes)
            else x.new_zeros(0, 9)
        )
        if self.mode == "predcls":
            if labels is None:
                raise ValueError("PredCls needs the object labels")
            obj_embed = self.obj_embed1(labels.long())
        else:
            if det_logits is None:
                det_logits = x.new_zeros(x.shape[0], self.num_classes)
            obj_embed = F.softmax(det_logits.detach().to(x.dtype), dim=1) @ self.obj_embed1.weight
        obj_pre_rep = torch.cat([x, obj_embed, pos], dim=-1)
        seqs = context_sequences(boxes)
        obj_ctx = self.lin_obj_h(_run_bilstm(self.obj_ctx_rnn, obj_pre_rep, seqs))
        if self.mode == "predcls":
            assert labels is not None
            obj_preds = labels.long()
            obj_dists = to_onehot(obj_preds, self.num_classes)
        else:
            decoder_inp = torch.cat([obj_pre_rep, obj_ctx], dim=1)
            teacher = labels if self.training else None
            obj_dists, obj_preds = self.decoder_rnn(decoder_inp, seqs, teacher)
            if self.mode == "sgdet" and not self.training and boxes_per_cls is not None:
                obj_preds = self._nms_preds(obj_dists, seqs, boxes, boxes_per_cls)
        edge_inp = torch.cat([self.obj_embed2(obj_preds), x, obj_ctx], dim=-1)
        edge_ctx = self.lin_edge_h(_run_bilstm(self.edge_ctx_rnn, edge_inp, seqs))
        return obj_dists, obj_preds, edge_ctx

    def _nms_preds(
        self,
        obj_dists: torch.Tensor,
        seqs: Sequence[torch.Tensor],
        boxes: Sequence[torch.Tensor],
        boxes_per_cls: Sequence[torch.Tensor],
    ) -> torch.Tensor:
        """Per image, the official greedy label NMS (:func:`~percepta.scene_graph.postprocess.
        obj_prediction_nms`, the same rule as ``DecoderRNN``'s) over its objects in sequence
        order."""
        all_cls = torch.cat(list(boxes_per_cls), 0)
        preds = torch.zeros(obj_dists.shape[0], dtype=torch.long, device=obj_dists.device)
        for s in context_sequences(boxes):
            preds[s] = obj_prediction_nms(all_cls[s], obj_dists[s], self.nms_thresh)
        return preds


@dataclass
class MotifsOutput:
    """What :meth:`MotifsPredictor.forward` returns (rows: objects / pairs of the batch)."""

    obj_dists: torch.Tensor  # [N, C+1] refined object logits (PredCls: one-hot +-1000)
    obj_preds: torch.Tensor  # [N] labels 1..C (SGDet after NMS; 0 possible)
    rel_dists: torch.Tensor  # [P, R+1] relation logits, column 0 background
    pair_preds: torch.Tensor  # [P, 2] the pair's (subject, object) labels
    post_ctx_rep: torch.Tensor  # [P, pooling] pair context (post_cat output; ReLU for causal)
    aux_dists: dict[str, torch.Tensor]  # training: auxiliary logits of the causal fusions


def _xavier(layer: nn.Linear) -> nn.Linear:
    """Official ``layer_init(..., xavier=True)``: Xavier-normal weights, zero bias."""
    nn.init.xavier_normal_(layer.weight, gain=1.0)
    nn.init.zeros_(layer.bias)
    return layer


class MotifsPredictor(nn.Module):
    """MOTIFS relation predictor on object and union features (see the module docstring).

    Args:
        mode: ``"predcls"`` | ``"sgcls"`` | ``"sgdet"``.
        class_names: ``C + 1`` object class names, background first.
        num_rel_classes: ``R + 1`` (background included).
        obj_dim: object feature size; ``pooling_dim``: union feature size (official 4096).
        hidden_dim, embed_dim, dropout, obj_layers, edge_layers, nms_thresh, glove_path: see
            :class:`LSTMContext`.
        fusion: ``"motifs"`` (default), ``"sum"`` or ``"gate"``.
        pred_dist: ``[C+1, C+1, R+1]`` log frequencies initialising the frequency bias (zeros
            when ``None``: set later with :meth:`set_pred_dist`).
    """

    def __init__(
        self,
        mode: str,
        class_names: Sequence[str],
        num_rel_classes: int,
        obj_dim: int,
        pooling_dim: int,
        hidden_dim: int = 512,
        embed_dim: int = 200,
        dropout: float = 0.2,
        fusion: str = "motifs",
        pred_dist: torch.Tensor | None = None,
        obj_layers: int = 1,
        edge_layers: int = 1,
        nms_thresh: float = 0.3,
        glove_path: str | None = None,
    ) -> None:
        super().__init__()
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
        self.mode, self.fusion, self.hidden_dim = mode, fusion, hidden_dim
        self.num_obj_classes, self.num_rel_classes = len(class_names), int(num_rel_classes)
        self.context_layer = LSTMContext(
            mode,
            class_names,
            obj_dim,
            embed_dim,
            hidden_dim,
            dropout,
            obj_layers,
            edge_layers,
            nms_thresh,
            glove_path,
        )
        self.post_emb = nn.Linear(hidden_dim, 2 * hidden_dim)
        nn.init.normal_(self.post_emb.weight, 0.0, 10.0 * (1.0 / hidden_dim) ** 0.5)
        nn.init.zeros_(self.post_emb.bias)
        self.post_cat = _xavier(nn.Linear(2 * hidden_dim, pooling_dim))
        if fusion == "motifs":
            self.rel_compress = _xavier(nn.Linear(pooling_dim, num_rel_classes))
        else:
            self.vis_compress = _xavier(nn.Linear(pooling_dim, num_rel_classes))
            self.ctx_compress = _xavier(nn.Linear(pooling_dim, num_rel_classes))
            if fusion == "gate":
                self.ctx_gate_fc = _xavier(nn.Linear(pooling_dim, num_rel_classes))
        if pred_dist is None:
            c = self.num_obj_classes
            pred_dist = torch.zeros(c, c, self.num_rel_classes)
        self.freq_bias = FrequencyBias(torch.as_tensor(pred_dist, dtype=torch.float32))

    def set_pred_dist(self, pred_dist: torch.Tensor) -> None:
        """Re-initialise the frequency bias from ``pred_dist [C+1, C+1, R+1]``."""
        self.freq_bias.reset(pred_dist)

    def forward(
        self,
        x: torch.Tensor,
        union_features: torch.Tensor,
        boxes: Sequence[torch.Tensor],
        image_sizes: Sequence[tuple[int, int]],
        pairs: Sequence[torch.Tensor],
        labels: torch.Tensor | None = None,
        det_logits: torch.Tensor | None = None,
        boxes_per_cls: Sequence[torch.Tensor] | None = None,
    ) -> MotifsOutput:
        """Object and relation logits of a batch.

        Args:
            x: ``[N, obj_dim]`` object features (images concatenated).
            union_features: ``[P, pooling_dim]`` union features of the pairs (images
                concatenated in the order of ``pairs``).
            boxes, image_sizes, labels, det_logits, boxes_per_cls: see
                :meth:`LSTMContext.forward`.
            pairs: per image ``[p_i, 2]`` (subject, object) indices into that image's objects.
        """
        obj_dists, obj_preds, edge_ctx = self.context_layer(
            x, boxes, image_sizes, labels, det_logits, boxes_per_cls
        )
        edge_rep = self.post_emb(edge_ctx).view(-1, 2, self.hidden_dim)
        head, tail = edge_rep[:, 0], edge_rep[:, 1]
        offsets, start = [], 0
        for b in boxes:
            offsets.append(start)
            start += int(b.shape[0])
        glob = [p.long() + off for p, off in zip(pairs, offsets)]
        g = torch.cat(glob, 0) if glob else torch.zeros(0, 2, dtype=torch.long)
        g = g.to(x.device)
        prod = torch.cat([head[g[:, 0]], tail[g[:, 1]]], dim=-1)
        pair_preds = torch.stack([obj_preds[g[:, 0]], obj_preds[g[:, 1]]], dim=1)
        freq = self.freq_bias.index_with_labels(pair_preds.long())
        aux: dict[str, torch.Tensor] = {}
        if self.fusion == "motifs":
            post = self.post_cat(prod)
            rel = self.rel_compress(post * union_features) + freq
        else:
            post = torch.relu(self.post_cat(prod))
            vis, ctx = self.vis_compress(union_features), self.ctx_compress(post)
            if self.fusion == "sum":
                rel = vis + ctx + freq
            else:
                rel = ctx * torch.sigmoid(vis + freq + self.ctx_gate_fc(post))
            if self.training:
                aux["ctx"] = ctx
                if self.fusion == "sum":
                    aux["vis"], aux["frq"] = vis, freq
        return MotifsOutput(obj_dists, obj_preds, rel, pair_preds, post, aux)


# official key prefix -> this module's key prefix (applied in order, first match)
OFFICIAL_KEY_MAP: tuple[tuple[str, str], ...] = (
    ("post_cat.0.", "post_cat."),  # CausalAnalysisPredictor: Sequential(Linear, ReLU)
)
# official keys with no counterpart here (causal moving averages, spatial embedding)
OFFICIAL_UNUSED_PREFIXES: tuple[str, ...] = (
    "avg_post_ctx",
    "untreated_feat",
    "untreated_spt",
    "untreated_conv_spt",
    "context_layer.untreated_",
    "spt_emb.",
)


def official_state_dict(
    predictor: MotifsPredictor, state_dict: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """An official MOTIFS predictor ``state_dict`` renamed for ``predictor``.

    Keys not listed in :data:`OFFICIAL_KEY_MAP` keep their name; those starting with one of
    :data:`OFFICIAL_UNUSED_PREFIXES` are dropped, and so are the decoder's in PredCls and the
    fusion layers ``predictor`` does not have (``ctx_gate_fc`` outside ``gate``). Load the result
    with ``predictor.load_state_dict(..., strict=True)``.
    """
    own = set(predictor.state_dict())
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if key.startswith(OFFICIAL_UNUSED_PREFIXES):
            continue
        new = key
        for old_prefix, new_prefix in OFFICIAL_KEY_MAP:
            if key.startswith(old_prefix):
                new = new_prefix + key[len(old_prefix) :]
                break
        if new not in own and (
            new.startswith("context_layer.decoder_rnn.")
            or new.split(".")[0] in ("ctx_gate_fc", "rel_compress", "vis_compress", "ctx_compress")
        ):
            continue  # a part this configuration does not use
        out[new] = value
    return out
