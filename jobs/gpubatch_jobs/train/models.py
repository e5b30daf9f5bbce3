"""The three Keras 3 models a TrainJob builds: dnn, rnn and cnn.

Each builder takes the spec's model section and the data's shapes and
returns an uncompiled functional model whose last layer is a float32 softmax
(float32 even under mixed precision, so the loss stays stable). The rnn
stacks plain LSTM/GRU layers with default activations and no recurrent
dropout or Masking, which keeps them eligible for the cuDNN kernels.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def build_model(model_spec: Any, *, n_features: int, n_classes: int, window_size: int | None = None,
                image_shape: list[int] | None = None) -> Any:
    builders: dict[str, Callable[..., Any]] = {"dnn": _dnn, "rnn": _rnn, "cnn": _cnn}
    return builders[model_spec.type](model_spec, n_features=n_features, n_classes=n_classes,
                                      window_size=window_size, image_shape=image_shape)


def _softmax(n_classes: int) -> Any:
    import keras

    return keras.layers.Dense(n_classes, activation="softmax", dtype="float32", name="classes")


def _dnn(spec: Any, *, n_features: int, n_classes: int, **_: Any) -> Any:
    import keras

    inputs = keras.Input(shape=(n_features,), name="features")
    x = inputs
    for i, units in enumerate(spec.hidden_units):
        x = keras.layers.Dense(units, activation="relu", name=f"hidden_{i}")(x)
        if spec.dropout > 0:
            x = keras.layers.Dropout(spec.dropout, name=f"dropout_{i}")(x)
    return keras.Model(inputs, _softmax(n_classes)(x), name="dnn")


def _rnn(spec: Any, *, n_features: int, n_classes: int, window_size: int | None, **_: Any) -> Any:
    import keras

    cell = keras.layers.LSTM if spec.cell == "lstm" else keras.layers.GRU
    inputs = keras.Input(shape=(window_size, n_features), name="windows")
    x = inputs
    for i in range(spec.layers):
        layer = cell(spec.hidden_size, return_sequences=True, name=f"{spec.cell}_{i}")
        if spec.bidirectional:
            layer = keras.layers.Bidirectional(layer, name=f"bidirectional_{i}")
        x = layer(x)
        if spec.dropout > 0:
            x = keras.layers.Dropout(spec.dropout, name=f"dropout_{i}")(x)
    # Dense on a 3-D tensor applies per time step: one class distribution per row.
    return keras.Model(inputs, _softmax(n_classes)(x), name="rnn")


def _cnn(spec: Any, *, n_classes: int, image_shape: list[int] | None, **_: Any) -> Any:
    import keras

    assert image_shape is not None
    height, width = image_shape
    inputs = keras.Input(shape=(height, width, 1), name="images")
    x = inputs
    side = min(height, width)
    for i, filters in enumerate(spec.filters):
        x = keras.layers.Conv2D(filters, spec.kernel_size, padding="same", activation="relu", name=f"conv_{i}")(x)
        if side >= 2 * spec.kernel_size:  # pool while the map is still larger than a kernel or two
            x = keras.layers.MaxPooling2D(2, name=f"pool_{i}")(x)
            side //= 2
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    if spec.dropout > 0:
        x = keras.layers.Dropout(spec.dropout, name="dropout")(x)
    return keras.Model(inputs, _softmax(n_classes)(x), name="cnn")


def compile_model(model: Any, *, learning_rate: float, model_type: str) -> None:
    """Adam + sparse categorical cross-entropy; accuracy weighted by the sample weights for rnn
    (they are 0 on padded steps, so padding never counts)."""
    import keras

    metric_kwargs: dict[str, Any] = (
        {"weighted_metrics": ["accuracy"]} if model_type == "rnn" else {"metrics": ["accuracy"]}
    )
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        **metric_kwargs,
    )
