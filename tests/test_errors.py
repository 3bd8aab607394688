"""factory/errors.py: the library names its parameters, the CLI shows them as flags."""

from __future__ import annotations

import pickle

import pytest

from factory.dataset.manifest import DatasetError
from factory.errors import ConfigError, UserError, flag_of


def test_the_library_names_parameters_and_the_cli_flags():
    err = UserError("an unfinished dataset exists at '/d'; pass `resume` to finish it", param="out")
    assert str(err) == "out: an unfinished dataset exists at '/d'; pass `resume` to finish it"
    assert (
        err.for_cli() == "--out: an unfinished dataset exists at '/d'; pass --resume to finish it"
    )
    e2 = UserError("must be > 0, got -1", param="real_voxel_nm")
    assert e2.for_cli() == "--real-voxel-nm: must be > 0, got -1"
    assert e2.for_cli({"real_voxel_nm": "--voxel"}) == "--voxel: must be > 0, got -1"
    # a message naming its own field (a config path, a shard) is shown as it is
    assert ConfigError("grid.shape: expected 3 sizes").for_cli() == "grid.shape: expected 3 sizes"
    assert flag_of("gpus_per_worker") == "--gpus-per-worker"


@pytest.mark.parametrize(
    "err",
    [UserError("bad", param="workers"), ConfigError("a.b: bad"), DatasetError("shard x: bad")],
)
def test_errors_survive_pickling_with_their_parameter(err):
    back = pickle.loads(pickle.dumps(err))  # Ray moves a worker's error to the driver this way
    assert type(back) is type(err) and str(back) == str(err) and back.param == err.param
    assert back.for_cli() == err.for_cli()


def test_a_training_data_error_keeps_its_parameter_across_the_ranks():
    from models.train import _pack, _unpack

    for err in (UserError("holds a run with seed 3", param="out"), DatasetError("shard a: bad")):
        back = _unpack(_pack(err))
        assert back.for_cli() == err.for_cli() and back.param == err.param
