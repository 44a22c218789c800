"""Every layer's bad-input error is a TetherInputError, which the CLI turns into exit code 2."""

import pytest
import typer

from tether import cli
from tether.data import DataError
from tether.errors import ConfigError, TetherInputError, TrainingError
from tether.models.embedded import EmbeddedModelMissing
from tether.models.loading import ModelLoadError
from tether.recipes.score import ScoreInputError
from tether.rollout.backends import GenerationBackendError
from tether.rollout.placement import PlacementError
from tether.rollout.rewards import RewardSpecError
from tether.utils.device import DeviceError
from tether.utils.distributed import DistributedError


@pytest.mark.parametrize("cls", [ConfigError, DataError, ModelLoadError, EmbeddedModelMissing, ScoreInputError,
                                 GenerationBackendError, RewardSpecError, PlacementError, DeviceError, DistributedError])
def test_every_bad_input_error_is_a_tether_input_error(cls):
    assert issubclass(cls, TetherInputError)


@pytest.mark.parametrize("exc, code", [(RewardSpecError("reward=nope: no such module"), cli.EXIT_BAD_INPUT),
                                       (TrainingError("loss was NaN 3 times"), cli.EXIT_TRAINING_FAILED)])
def test_the_cli_maps_errors_to_exit_codes(exc, code, capsys):
    def runner(config):
        raise exc

    with pytest.raises(typer.Exit) as stopped:
        cli._run_recipe("sft", [], runner)
    assert stopped.value.exit_code == code
    assert str(exc) in capsys.readouterr().err


def test_a_bug_is_not_reported_as_bad_input():
    def runner(config):
        raise KeyError("a programming error keeps its traceback")

    with pytest.raises(KeyError):
        cli._run_recipe("sft", [], runner)
