#!/usr/bin/env python3
"""The PyTorch blocks ``gen_corpus.py`` exports into ``tests/corpus/ops`` (``TORCH_OPS``)."""

from __future__ import annotations

import math
import torch
import torch.nn as nn
import torch.nn.functional as F

# --------------------------------------------------------------------------
# ops/ : PyTorch-built blocks
# --------------------------------------------------------------------------


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNetBlock(nn.Module):
    """Identity-shortcut basic block followed by a strided one with a 1x1 downsample."""

    def __init__(self):
        super().__init__()
        self.block1 = BasicBlock(8, 8, 1)
        self.block2 = BasicBlock(8, 16, 2)

    def forward(self, x):
        return self.block2(self.block1(x))


class DepthwiseSeparable(nn.Module):
    def __init__(self, c: int = 16, cout: int = 32):
        super().__init__()
        self.dw = nn.Conv2d(c, c, 3, 1, 1, groups=c, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.act1 = nn.ReLU6(inplace=True)
        self.pw = nn.Conv2d(c, cout, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.act2 = nn.ReLU6(inplace=True)

    def forward(self, x):
        return self.act2(self.bn2(self.pw(self.act1(self.bn1(self.dw(x))))))


class SqueezeExcitation(nn.Module):
    """torchvision-style SE: GAP -> 1x1 conv -> ReLU -> 1x1 conv -> Sigmoid -> Mul."""

    def __init__(self, c: int = 32, squeeze: int = 8):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(c, squeeze, 1)
        self.relu = nn.ReLU()
        self.fc2 = nn.Conv2d(squeeze, c, 1)
        self.gate = nn.Sigmoid()

    def forward(self, x):
        s = self.gate(self.fc2(self.relu(self.fc1(self.avgpool(x)))))
        return x * s


class SqueezeExcitationLinear(nn.Module):
    """MobileNetV3-style SE with Linear layers and a HardSigmoid gate."""

    def __init__(self, c: int = 32, squeeze: int = 8):
        super().__init__()
        self.fc1 = nn.Linear(c, squeeze)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(squeeze, c)
        self.gate = nn.Hardsigmoid()

    def forward(self, x):
        s = x.mean((2, 3))
        s = self.gate(self.fc2(self.relu(self.fc1(s))))
        return x * s[:, :, None, None]


class Conv1dNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv1d(4, 8, 5, padding=2)
        self.bn1 = nn.BatchNorm1d(8)
        self.pool1 = nn.MaxPool1d(2)
        self.c2 = nn.Conv1d(8, 16, 3, padding=2, dilation=2)
        self.pool2 = nn.AvgPool1d(2)
        self.c3 = nn.Conv1d(16, 16, 3, stride=2, padding=1, groups=4)

    def forward(self, x):
        x = self.pool1(F.relu(self.bn1(self.c1(x))))
        x = self.pool2(F.relu(self.c2(x)))
        return F.relu(self.c3(x))


class ConvTransposeDecoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.up1 = nn.ConvTranspose2d(16, 8, 4, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.up2 = nn.ConvTranspose2d(8, 4, 4, 2, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(4)
        self.relu = nn.ReLU()
        self.resize = nn.Upsample(scale_factor=2, mode="nearest")
        self.head = nn.Conv2d(4, 3, 3, padding=1)

    def forward(self, x):
        x = self.relu(self.bn1(self.up1(x)))
        x = self.relu(self.bn2(self.up2(x)))
        return torch.tanh(self.head(self.resize(x)))


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(16, 32)
        self.act1 = nn.GELU()
        self.fc2 = nn.Linear(32, 32)
        self.act2 = nn.SiLU()
        self.norm = nn.LayerNorm(32)
        self.fc3 = nn.Linear(32, 16)
        self.act3 = nn.Tanh()
        self.fc4 = nn.Linear(16, 10)
        self.softmax = nn.Softmax(dim=-1)

    def forward(self, x):
        x = self.act2(self.fc2(self.act1(self.fc1(x))))
        x = self.act3(self.fc3(self.norm(x)))
        return self.softmax(self.fc4(x))


class ConvVariants(nn.Module):
    """strided+padded, grouped+dilated, non-square kernel w/o bias, reflect padding."""

    def __init__(self):
        super().__init__()
        self.strided = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.grouped_dilated = nn.Conv2d(16, 16, 3, padding=2, dilation=2, groups=4)
        self.nonsquare = nn.Conv2d(16, 16, (1, 5), padding=(0, 2), bias=False)
        self.reflect = nn.Conv2d(16, 8, 3, padding=1, padding_mode="reflect")

    def forward(self, x):
        x = F.relu(self.strided(x))
        x = F.relu(self.grouped_dilated(x))
        x = F.relu(self.nonsquare(x))
        return self.reflect(x)


class ConvBN(nn.Module):
    """Conv -> BN -> ReLU twice, plus a BN directly on the input (exported with
    do_constant_folding=False so the BatchNormalization nodes survive)."""

    def __init__(self):
        super().__init__()
        self.bn_in = nn.BatchNorm2d(3)
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(8)

    def forward(self, x):
        x = self.bn_in(x)
        x = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(x)))


class Normalization(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 8, 3, padding=1)
        self.gn = nn.GroupNorm(2, 8)
        self.inorm = nn.InstanceNorm2d(8, affine=True)
        self.ln = nn.LayerNorm(8)

    def forward(self, x):
        x = self.gn(self.conv(x))
        x = self.inorm(F.relu(x))
        x = self.ln(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return x


class Activations(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 1)
        self.acts = nn.ModuleList([
            nn.LeakyReLU(0.1), nn.ELU(), nn.Sigmoid(), nn.Tanh(), nn.Hardswish(),
            nn.Hardsigmoid(), nn.Mish(), nn.Softplus(), nn.GELU(approximate="tanh"),
            nn.Hardtanh(-1.0, 2.0), nn.ReLU6(), nn.ReLU(),
        ])

    def forward(self, x):
        x = self.conv(x)
        return torch.cat([a(x) for a in self.acts], dim=1)


class TensorOps(nn.Module):
    """Elementwise arithmetic and shape manipulation."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 6, 3, padding=1)

    def forward(self, x):
        x = self.conv(x)                                   # [1,6,8,8]
        a, b, c = torch.split(x, [1, 2, 3], dim=1)
        y = torch.cat([a * 2.0 - b[:, :1], b / 3.0, c.pow(2.0)], dim=1)
        y = torch.sqrt(y * y + 1.0)                        # [1,6,8,8]
        y = y[:, :, 2:6, 1:7]                              # Slice -> [1,6,4,6]
        y = y.squeeze(0).unsqueeze(1)                      # [6,1,4,6]
        y = y.transpose(2, 3).reshape(1, 6, 24)            # [1,6,24]
        return y + x.mean()


class ClassifierHead(nn.Module):
    """Classic stem + GAP -> Flatten -> Dropout -> Linear head."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, 2, 1)
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.conv = nn.Conv2d(16, 32, 3, padding=1)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(0.2)
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        x = self.pool(F.relu(self.stem(x)))
        x = F.relu(self.conv(x))
        return self.fc(self.drop(torch.flatten(self.gap(x), 1)))


class Pooling(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 8, 3, padding=1)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.avgpool = nn.AvgPool2d(3, 2, 1, count_include_pad=False)
        self.avgpool2 = nn.AvgPool2d(2, 2)
        self.maxpool_ceil = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.gap = nn.AdaptiveAvgPool2d(1)

    def forward(self, x):
        x = F.relu(self.conv(x))                           # [1,8,16,16]
        y = self.maxpool(x) + self.avgpool(x)              # [1,8,8,8]
        z = self.avgpool2(y) + self.maxpool_ceil(y)        # [1,8,4,4]
        return torch.cat([self.gap(z), z.mean((2, 3), keepdim=True)], dim=1).flatten(1)


class ResizePixelShuffle(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(8, 16, 3)
        self.shuffle = nn.PixelShuffle(2)

    def forward(self, x):
        x = F.pad(x, (1, 1, 1, 1))                         # Pad (constant 0)
        x = self.shuffle(self.conv(x))                     # DepthToSpace -> [1,4,16,16]
        x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        return F.interpolate(x, size=(24, 24), mode="nearest")


class AttentionMatmul(nn.Module):
    """Single-head attention written with explicit matmuls (activation x activation)."""

    def __init__(self, d: int = 16):
        super().__init__()
        self.q = nn.Linear(d, d)
        self.k = nn.Linear(d, d)
        self.v = nn.Linear(d, d)
        self.o = nn.Linear(d, d, bias=False)
        self.scale = 1.0 / math.sqrt(d)

    def forward(self, x):                                  # [1,8,16]
        q, k, v = self.q(x), self.k(x), self.v(x)
        att = torch.softmax(torch.matmul(q, k.transpose(-2, -1)) * self.scale, dim=-1)
        return self.o(torch.matmul(att, v))


class DynamicBatchNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = F.relu(self.bn(self.conv(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class Recurrent(nn.Module):
    """A bidirectional LSTM, a GRU and an RNN over one sequence, then a ScatterElements."""

    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(8, 6, batch_first=True, bidirectional=True)
        self.gru = nn.GRU(12, 5, batch_first=True)
        self.rnn = nn.RNN(5, 4, batch_first=True)
        self.fc = nn.Linear(4, 3)
        self.register_buffer("order", torch.tensor([[[3], [2], [1], [0], [4], [5], [6]]]))

    def forward(self, x):                                  # [1,7,8]
        y, _ = self.lstm(x)
        y, _ = self.gru(y)
        y, _ = self.rnn(y)
        y = y[:, :, :1].scatter(1, self.order, y[:, :, 1:2])
        return self.fc(y.expand(-1, -1, 4) + y)


class Fold(nn.Module):
    """VOLO's outlook attention in small: 3x3 neighbourhoods unfolded (stride 2, pad 1), weighted
    per position, folded back with overlapping blocks added (``F.fold``: ONNX ``Col2Im``)."""

    def __init__(self):
        super().__init__()
        self.v = nn.Conv2d(4, 4, 1)
        self.a = nn.Conv2d(4, 9, 1)

    def forward(self, x):                                  # [1,4,8,8]
        b, c, h, w = x.shape
        v = F.unfold(self.v(x), 3, padding=1, stride=2)    # [1,36,16]
        a = torch.softmax(self.a(F.avg_pool2d(x, 2)).flatten(2), 1)
        v = v.view(b, c, 9, -1) * a.unsqueeze(1)
        return F.fold(v.reshape(b, c * 9, -1), (h, w), 3, padding=1, stride=2)


@torch.jit._script_if_tracing
def _append_rows(rows: torch.Tensor) -> torch.Tensor:
    """One row at a time onto a list, as TorchVision pastes masks (an ONNX ``Loop``)."""
    res = torch.zeros(0, rows.size(1))
    for i in range(rows.size(0)):
        res = torch.cat((res, rows[i].unsqueeze(0)))
    return res


class DetectHead(nn.Module):
    """A detector's head in small, as TorchVision's write it: a score and a box per position,
    the positions above a threshold (``NonZero``), the best of them (``TopK``), their boxes
    after non-maximum suppression, pooled by ``RoiAlign`` into a Linear per kept box; the FPN
    level rule's ``floor`` and the class index's remainder (``Mod``) on the way, the rows
    appended to a list one box at a time (``Loop``)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 8, 3, padding=1)
        self.score = nn.Conv2d(8, 1, 1)
        self.box = nn.Conv2d(8, 4, 1)
        self.fc = nn.Linear(8 * 2 * 2, 3)

    def forward(self, x):                                  # [1,4,16,16]
        import torchvision
        f = F.relu(self.conv(x))
        scores = self.score(f).flatten()                   # [256]
        d = self.box(f).flatten(2)[0].t()                  # [256,4]
        keep = torch.nonzero(scores > 0.0).flatten()
        top = scores[keep].topk(min(32, keep.numel()))
        kept = keep[top.indices]
        cx, cy = (kept % 16).float(), torch.div(kept, 16, rounding_mode="floor").float()
        wh = 2.0 + 4.0 * torch.sigmoid(d[kept, 2:])
        boxes = torch.stack([cx - wh[:, 0], cy - wh[:, 1], cx + wh[:, 0], cy + wh[:, 1]], 1)
        rois = boxes[torchvision.ops.nms(boxes, top.values, 0.5)]
        level = torch.floor(torch.log2(torch.sqrt((rois[:, 2] - rois[:, 0]) * (rois[:, 3] - rois[:, 1]))))
        rois = torch.cat([torch.zeros_like(rois[:, :1]), rois], 1)
        pooled = torchvision.ops.roi_align(f, rois, (2, 2), 1.0, 2, False)
        return _append_rows(self.fc(pooled.flatten(1)) + level.unsqueeze(1))


def transformer_encoder():
    return nn.TransformerEncoderLayer(d_model=32, nhead=4, dim_feedforward=64, batch_first=True)


# name -> (factory, input shape, exporter, options)
# options: optimize (bool), dynamic_batch (bool), macs_note (str: force macs=null),
# expected (bool: the input and PyTorch's output go into the manifest, for ops tract cannot run)
TORCH_OPS = {
    "resnet_block": (ResNetBlock, (1, 8, 16, 16), "dynamo", {}),
    "depthwise_separable": (DepthwiseSeparable, (1, 16, 16, 16), "dynamo", {}),
    "squeeze_excitation": (SqueezeExcitation, (1, 32, 8, 8), "torchscript", {}),
    "squeeze_excitation_linear": (SqueezeExcitationLinear, (1, 32, 8, 8), "dynamo", {}),
    "recurrent": (Recurrent, (1, 7, 8), "torchscript", {}),
    # tract has no Col2Im: the executor is checked against PyTorch's output kept in the manifest
    "fold": (Fold, (1, 4, 8, 8), "dynamo", {"expected": True}),
    # data-dependent sizes: the hooks count the boxes this input keeps, nape their bound; the
    # executor refuses the graph (its shapes are bounds), so no output is kept either
    "detect_head": (DetectHead, (1, 4, 16, 16), "torchscript", {
        "macs_note": "data-dependent: the Linear runs once per box kept by NonZero, TopK and "
                     "NMS on this input; nape counts it at the bound (docs/costs.md)"}),
    "transformer_encoder": (transformer_encoder, (1, 8, 32), "dynamo", {
        "macs_note": "nn.MultiheadAttention uses its in_proj/out_proj weights functionally "
                     "and the QK^T / AV matmuls are not modules, so hooks miss that work"}),
    "conv1d_net": (Conv1dNet, (1, 4, 64), "dynamo", {}),
    "convtranspose_decoder": (ConvTransposeDecoder, (1, 16, 4, 4), "torchscript", {}),
    "mlp": (MLP, (1, 16), "dynamo", {}),
    "conv_variants": (ConvVariants, (1, 8, 16, 16), "dynamo", {}),
    "batchnorm_unfolded": (ConvBN, (1, 3, 16, 16), "torchscript", {"optimize": False}),
    "normalization": (Normalization, (1, 4, 8, 8), "dynamo", {}),
    "activations": (Activations, (1, 4, 8, 8), "dynamo", {}),
    "tensor_ops": (TensorOps, (1, 4, 8, 8), "dynamo", {}),
    "classifier_head": (ClassifierHead, (1, 3, 32, 32), "torchscript", {}),
    "pooling": (Pooling, (1, 4, 16, 16), "torchscript", {}),
    "resize_pixelshuffle": (ResizePixelShuffle, (1, 8, 8, 8), "dynamo", {}),
    "attention_matmul": (AttentionMatmul, (1, 8, 16), "dynamo", {
        "macs_note": "the activation x activation matmuls (QK^T, AV) are torch.matmul calls, "
                     "not modules, so hooks miss that work"}),
    "dynamic_batch": (DynamicBatchNet, (1, 3, 16, 16), "dynamo", {"dynamic_batch": True}),
}
