"""Training parameters: reference names and defaults, one precedence order, clear refusals."""

from __future__ import annotations

import pytest

from core.base.errors import ConfigError
from core.base.params import parse_set_options, resolve_params
from core.base.tasks import Task


def test_later_layers_win_over_task_defaults():
    params = resolve_params(Task.DETECTION, {"learning_rate": 0.02, "number_of_epochs": 4},
                            {"learning_rate": 0.001})
    assert params.model_name == "yolov5"  # the task's default model
    assert (params.learning_rate, params.number_of_epochs) == (0.001, 4)
    assert resolve_params(Task.CLASSIFICATION).training_batch_size == 78


def test_unknown_names_are_refused_with_close_matches_and_the_allowed_list():
    with pytest.raises(ConfigError) as error:
        resolve_params(Task.CLASSIFICATION, {"learnin_rate": 0.1})
    message = str(error.value)
    assert "training_parameters.learnin_rate" in message
    assert "did you mean 'learning_rate'" in message and "number_of_epochs" in message


@pytest.mark.parametrize(("name", "value", "expected"), [
    ("optimizer", "rmsprop", "'sgd', 'adam' or 'adamw'"),
    ("number_of_epochs", 0, "greater than or equal to 1"),
    ("learning_rate", -1, "greater than 0"),
    ("advanced_settings", '{"mosaic": false}', "allowed: ['apply_automl_train_augmentations'"),
    ("advanced_settings", "[1]", "JSON object"),
])
def test_bad_values_are_refused_before_training_with_the_range(name, value, expected):
    with pytest.raises(ConfigError, match=f"training_parameters.{name}") as error:
        resolve_params(Task.DETECTION, {name: value})
    assert expected in str(error.value)


def test_set_options_read_yaml_scalars_and_the_reference_forms():
    values = parse_set_options(["number_of_epochs=5", "learning_rate=0.01", "nesterov=false",
                                "tile_grid_size=(3, 2)",
                                'advanced_settings={"apply_mosaic_for_yolo": false}'])
    params = resolve_params(Task.DETECTION, values)
    assert (params.number_of_epochs, params.nesterov, params.tile_grid_size) == (5, False, (3, 2))
    assert params.advanced("apply_mosaic_for_yolo") is False
    assert params.advanced("apply_automl_train_augmentations") is True
    with pytest.raises(ConfigError, match="--set.epochs"):
        parse_set_options(["epochs=3"])
