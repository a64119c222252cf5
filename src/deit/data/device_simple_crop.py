"""DeiT III's simple random crop (``data.train_crop: simple``) under ``data.device_augment``: the workers cut the
part of the photo the crop reads, the device resizes it (``deit.data.device_resize``).

The worker path (``SimpleRandomCrop``) resizes the whole photo, shorter side to ``size`` (Pillow), pads it
``padding`` pixels by reflection and cuts ``size`` x ``size`` at (top, left) of the padded photo. Row i of that crop
is row ``reflect(top - padding + i)`` of the resized photo, which Pillow computes from the few source rows under its
filter around ``(row + 0.5) * scale``; columns alike. So the worker draws (top, left) from the resized size as the
worker path does, cuts the source rows and columns the crop's rows and columns read (a strip: for an ImageNet
photo about 3/4 of it, for a panorama far less) and sends it, not resized; the device builds, per
image, Pillow's coefficient rows of the WHOLE resize (its scale, its clamping at the photo's edges) for the crop's
resized rows and columns, shifted to the strip, and runs Pillow's two passes in the order Pillow takes for the
whole resize. The crop comes out as the worker path's, bit for bit.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from deit.data.device_resize import coefficients, kernel_taps, source_span, two_pass, vertical_first
from deit.data.device_steps import INTERPOLATION_NAMES, DeviceStep, Pending, size_chunks, unpack
from deit.data.transforms import SimpleRandomCrop

Params = dict[str, Any]
# Per image, (rows, columns) each: the strip's size; the photo's; the resized photo's; where the crop's window
# starts in the resized photo (top - padding, left - padding); the strip's offset in the photo.
_PAIRS = ("hw", "source", "resized", "start", "offset")


def reflect(index: Any, n: Any) -> Any:
    """``index`` of an axis of ``n`` >= 2 pixels padded by reflection (torchvision's ``reflect``, numpy's
    ``pad(mode="reflect")``: -k -> k, n-1+k -> n-1-k, repeating beyond) -> the pixel it shows. Works on ints,
    numpy arrays and tensors alike (``n`` may be a tensor, one per index)."""
    period = 2 * (n - 1)
    k = abs(index) % period
    return k - (k >= n) * (2 * k - period)


class SimpleCropStep(DeviceStep):
    """SimpleRandomCrop: the worker draws (top, left) as the worker path does and sends the source strip the crop
    reads; the device resizes the strip's part of the whole resize to ``size`` x ``size`` as PIL does, chunked by
    strip size (ordered so at collate)."""

    name = "layout"

    def __init__(self, crop: SimpleRandomCrop):
        self.crop, self.size, self.padding = crop, crop.size, crop.padding
        self.resample = INTERPOLATION_NAMES[crop.resize.resample]

    def _span(self, start: int, out: int, size: int) -> tuple[int, int]:
        """The source pixels ``[lo, hi)`` along one axis that the window's resized pixels ``reflect(start + i)``
        read (they are contiguous: the window, folded at an edge)."""
        window = reflect(np.arange(self.size) + start, out)
        return source_span(int(window.min()), int(window.max()), size, out, self.resample)

    def draw(self, pending: Pending, rng: np.random.Generator) -> Params:
        img = pending.image
        ow, oh = self.crop.resize.output_size(img.width, img.height)
        top, left = self.crop.get_params(ow, oh, rng)
        start = (top - self.padding, left - self.padding)
        (y0, y1), (x0, x1) = self._span(start[0], oh, img.height), self._span(start[1], ow, img.width)
        pending.image = np.asarray(img.crop((x0, y0, x1, y1)))  # only the strip is copied out of the photo
        pending.shape = (3, self.size, self.size)
        return {"hw": (y1 - y0, x1 - x0), "source": (img.height, img.width), "resized": (oh, ow), "start": start,
                "offset": (y0, x0)}

    def collate(self, draws: list[Params]) -> Params:
        order, chunks = size_chunks([d["hw"] for d in draws],
                                    [vertical_first(*d["source"], *d["resized"]) for d in draws])
        taps = [tuple(max(kernel_taps(draws[i]["source"][axis], draws[i]["resized"][axis], self.resample)
                          for i in order[start:end]) for axis in (0, 1)) for start, end, *_ in chunks]
        return {"order": order, "index": torch.tensor(order), "chunks": chunks, "taps": taps,
                **{key: torch.tensor([draws[i][key] for i in order]) for key in _PAIRS}}

    def apply(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        out = torch.empty(len(params["order"]), 3, self.size, self.size, dtype=torch.uint8, device=x.device)
        steps = torch.arange(self.size, device=x.device)
        for (start, end, lo, hi, height, width, vertical), taps in zip(params["chunks"], params["taps"], strict=True):
            source, resized, offset = (params[key][start:end] for key in ("source", "resized", "offset"))
            window = reflect(params["start"][start:end].unsqueeze(-1) + steps, resized.unsqueeze(-1))  # (n, 2, size)
            rows, cols = (coefficients(source[:, a], resized[:, a], window[:, a], length, taps[a], self.resample,
                                       offset[:, a]) for a, length in ((0, height), (1, width)))
            images = two_pass(unpack(x[lo:hi], params["hw"][start:end], height, width), rows, cols, vertical)
            out.index_copy_(0, params["index"][start:end], images)
        return out


__all__ = ["SimpleCropStep", "reflect"]
