"""Label the charts of examples/10-render-prices with a trend the picture shows.

The RenderJob output (../10-render-prices/out/goog-charts.h5) holds 64x64
charts of 32 trading days, labelled with the NEXT day's direction, which no
chart can predict much better than chance. This writes data/charts-trend.h5
with the same images labelled by what they do show: whether the window's last
close is above its first (`up`) or not (`down`), from the prices in
../10-render-prices/data/goog.h5 and the render's `index` (first day of each
window). Run examples/10-render-prices first (run-all.sh does: it is earlier
in order).
"""

from __future__ import annotations

import sys
from pathlib import Path

import h5py
import numpy as np

HERE = Path(__file__).resolve().parent
CHARTS = HERE.parent / "10-render-prices" / "out" / "goog-charts.h5"
PRICES = HERE.parent / "10-render-prices" / "data" / "goog.h5"


def main() -> int:
    if not CHARTS.is_file() or not PRICES.is_file():
        print(f"missing {CHARTS} or {PRICES}: run examples/10-render-prices first", file=sys.stderr)
        return 1
    with h5py.File(CHARTS, "r") as charts, h5py.File(PRICES, "r") as prices:
        images, first_day = charts["images"][()], charts["index"][()]
        seq_len = int(charts.attrs["seqLen"])
        close = prices["close"][()]
    went_up = close[first_day + seq_len - 1] > close[first_day]
    labels = np.where(went_up, "up", "down").astype("S4")
    (HERE / "data").mkdir(exist_ok=True)
    with h5py.File(HERE / "data" / "charts-trend.h5", "w") as out:
        out.create_dataset("images", data=images, compression="gzip")
        out.create_dataset("labels", data=labels)
        out.attrs["labels"] = "up: the window's last close is above its first; down: not"
    print(f"wrote {HERE / 'data' / 'charts-trend.h5'}: {len(images)} charts, {went_up.mean():.0%} up")
    return 0


if __name__ == "__main__":
    sys.exit(main())
