"""Export two tabular datasets that ship inside scikit-learn (no download) for the TrainJob examples.

data/breast-cancer.csv   569 tumours, 30 numeric measurements, label malignant|benign
data/wine.parquet        178 wines, 13 chemical measurements, label class_0|class_1|class_2
"""

from pathlib import Path

from sklearn.datasets import load_breast_cancer, load_wine


def export(loader, path: Path) -> None:
    bunch = loader(as_frame=True)
    frame = bunch.frame.drop(columns=["target"])
    frame["label"] = [str(bunch.target_names[t]) for t in bunch.target]
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    counts = frame["label"].value_counts().to_dict()
    print(f"wrote {path}: {len(frame)} rows, {frame.shape[1] - 1} features, classes {counts}")


if __name__ == "__main__":
    data = Path(__file__).resolve().parent / "data"
    data.mkdir(exist_ok=True)
    export(load_breast_cancer, data / "breast-cancer.csv")
    export(load_wine, data / "wine.parquet")
