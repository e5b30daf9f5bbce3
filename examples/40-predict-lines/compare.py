"""After the demo: accuracy of both PredictJobs on the held-out lines, and how far the engines differ.

    python compare.py
"""

from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
truth = pd.read_parquet(HERE.parent / "30-train-lines/data/lines-holdout.parquet", columns=["file", "line", "label"])
local = pd.read_parquet(HERE / "out/lines-predictions.parquet")
spark = pd.read_parquet(HERE / "out/lines-predictions-spark.parquet")
for name, frame in (("local", local), ("spark", spark)):
    joined = truth.merge(frame, on=["file", "line"], suffixes=("_true", ""))
    print(f"{name}: {len(joined)} lines, accuracy {np.mean(joined['label'] == joined['label_true']):.3f}")
both = local.merge(spark, on=["file", "line"], suffixes=("", "_spark"))
columns = [c for c in local.columns if c.startswith("p_")]
print(f"max |local - spark| = {max(float(np.abs(both[c] - both[c + '_spark']).max()) for c in columns):.2e}")
