"""A plugin example: your own data and your own model in derelayl.

``load`` generates an image dataset (nothing is downloaded): the digits 0-9 drawn in the 17
fonts matplotlib ships (DejaVu Sans/Serif/Mono, STIX, Computer Modern; regular, bold, italic),
each randomly rotated, scaled, shifted and blurred, with pixel noise, as 16x16 grey images.
``build`` is a small CNN for them; ``adam`` an optimizer choice. ``cnn_rendered_digits.toml``
names all three, so that ``derelayl experiment`` and ``derelayl compare`` train this CNN on this
data exactly as they train the built-in MLP:

    derelayl experiment examples/cnn_rendered_digits.toml --out runs/cnn

Samples are flat rows (derelayl stores them so in ``split.json``); the model reshapes them.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter, ImageFont
from torch import nn

SIZE = 16
FONTS = sorted(
    f.name
    for f in (Path(matplotlib.__file__).parent / "mpl-data" / "fonts" / "ttf").glob("*.ttf")
    if f.name.startswith(("DejaVu", "STIXGeneral", "cmr", "cmss"))
)


def load(samples: int = 6000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``samples`` images (SIZE x SIZE, flattened, 0..1) and their digit labels, balanced."""
    rng = np.random.default_rng(seed)
    fonts = [str(Path(matplotlib.__file__).parent / "mpl-data" / "fonts" / "ttf" / f) for f in FONTS]
    x = np.empty((samples, SIZE * SIZE), dtype=np.float32)
    y = np.arange(samples, dtype=np.int64) % 10
    for i in range(samples):
        canvas = Image.new("L", (48, 48), 0)
        font = ImageFont.truetype(fonts[rng.integers(len(fonts))], int(rng.integers(22, 34)))
        width = int(rng.integers(1, 3))  # stroke: the glyphs stay visible at 16 x 16
        ImageDraw.Draw(canvas).text(
            (24, 24), str(y[i]), fill=255, font=font, anchor="mm", stroke_width=width, stroke_fill=255
        )
        canvas = canvas.rotate(float(rng.uniform(-20, 20)), resample=Image.BILINEAR)
        dx, dy = rng.integers(-5, 6, size=2)
        canvas = canvas.crop((8 + dx, 8 + dy, 40 + dx, 40 + dy)).filter(ImageFilter.GaussianBlur(rng.uniform(0, 1)))
        img = np.asarray(canvas.resize((SIZE, SIZE), Image.BILINEAR), dtype=np.float32) / 255.0
        x[i] = np.clip(img + rng.normal(0, 0.1, img.shape), 0, 1).ravel()
    return x, y


class SmallCNN(nn.Module):
    def __init__(self, n_classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 8 x 8 x 8
            nn.Conv2d(8, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 16 x 4 x 4
        )
        self.head = nn.Linear(16 * 4 * 4, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x.view(-1, 1, SIZE, SIZE)).flatten(1))


def build(n_features: int, n_classes: int) -> nn.Module:
    if n_features != SIZE * SIZE:
        raise ValueError(f"this CNN takes {SIZE}x{SIZE} images, got {n_features} features")
    return SmallCNN(n_classes)


def adam(parameters, config):  # type: ignore[no-untyped-def]
    """An optimizer plugin: Adam at the config's learning rate."""
    return torch.optim.Adam(parameters, lr=config.lr)
