"""Real prices for the RenderJob example, made offline from data matplotlib ships.

`matplotlib.cbook.get_sample_data('goog.npz')` holds Google's daily prices
2004-2008 (1,047 trading days). This writes data/goog.h5 with
  close   (n-1,) float64  closing price of each day but the last
  labels  (n-1,) int8     1 when the next day's close is higher, else 0
so a window of `seqLen` days ending on day t is labelled with whether day t+1
went up: the target a CNN TrainJob can learn from the rendered charts.
If the sample data is missing, a seeded geometric random walk stands in.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np


def closing_prices() -> tuple[np.ndarray, str]:
    try:
        from matplotlib import cbook

        prices = cbook.get_sample_data("goog.npz")["price_data"]
        return np.asarray(prices["close"], dtype=np.float64), "matplotlib sample data goog.npz (GOOG daily close)"
    except Exception:  # very old or trimmed matplotlib: no sample data
        rng = np.random.default_rng(7)
        return 100.0 * np.exp(np.cumsum(rng.normal(0.0005, 0.02, 1047))), "seeded geometric random walk"


def main() -> None:
    close, origin = closing_prices()
    up_next_day = (np.diff(close) > 0).astype(np.int8)
    out = Path(__file__).resolve().parent / "data"
    out.mkdir(exist_ok=True)
    with h5py.File(out / "goog.h5", "w") as f:
        f.create_dataset("close", data=close[:-1])
        f.create_dataset("labels", data=up_next_day)
        f.attrs["origin"] = origin
        f.attrs["labels"] = "1: the close after the window's last day is higher; 0: not"
    print(f"wrote {out / 'goog.h5'}: {len(close) - 1} days from {origin}, {up_next_day.mean():.0%} up days")


if __name__ == "__main__":
    main()
