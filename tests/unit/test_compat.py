import dataclasses
import subprocess
import sys

import numpy as np
import pytest


def test_hook_converts_ndarray_defaults_and_is_removed():
    from metacpo.compat import ndarray_defaults_as_factories

    original = dataclasses._get_field
    with ndarray_defaults_as_factories():
        assert dataclasses._get_field is not original

        @dataclasses.dataclass
        class Geom:
            color: np.ndarray = np.array([1.0, 0.0, 0.0])
            size: np.ndarray = dataclasses.field(default=np.array([0.5]))

    assert dataclasses._get_field is original
    a, b = Geom(), Geom()
    np.testing.assert_array_equal(a.color, [1.0, 0.0, 0.0])
    np.testing.assert_array_equal(a.size, [0.5])
    a.color[0] = 7.0
    assert b.color[0] == 1.0  # each instance owns its array

    # Outside the hook the stock Python 3.11 behaviour is back.
    try:

        @dataclasses.dataclass
        class Bad:
            color: np.ndarray = np.array([1.0])

    except ValueError as exc:
        assert "mutable default" in str(exc)
    else:  # pragma: no cover
        raise AssertionError("hook outlived the with-block")


def test_hook_removed_even_on_error():
    from metacpo.compat import ndarray_defaults_as_factories

    original = dataclasses._get_field
    try:
        with ndarray_defaults_as_factories():
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert dataclasses._get_field is original


def test_import_safety_gymnasium_in_fresh_interpreter():
    code = (
        "import dataclasses, numpy as np\n"
        "orig = dataclasses._get_field\n"
        "from metacpo.compat import import_safety_gymnasium\n"
        "sg = import_safety_gymnasium()\n"
        "assert dataclasses._get_field is orig\n"
        "try:\n"
        "    dataclasses.make_dataclass('X', [('c', np.ndarray, dataclasses.field(default=np.zeros(1)))])\n"
        "    raise SystemExit('patch outlived the import')\n"
        "except ValueError:\n"
        "    pass\n"
        "assert import_safety_gymnasium() is sg\n"
        "env = sg.make('SafetyPointCircle1-v0')\n"
        "obs, info = env.reset(seed=0)\n"
        "assert len(env.step(env.action_space.sample())) == 6\n"
        "print('OK')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("OK")


@pytest.mark.parametrize("later_imports", ["", "import gymnasium\nimport gymnasium.envs.registration\n"])
def test_import_metacpo_holds_back_only_the_robotics_notice(later_imports):
    """gymnasium loads its env plugins (gymnasium-robotics) at import; wherever gymnasium is first
    imported after ``import metacpo`` (the CLI's id checks, a user's script), no notice leaks."""
    code = (
        "import metacpo\n"
        + later_imports
        + "from farama_notifications import notifications\n"
        "assert 'gymnasium_robotics' in notifications, 'notifications table not restored'\n"
        "print('OK')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "AdroitHand" not in out.stderr
    if later_imports:
        assert out.stderr.strip() == "", out.stderr


def test_import_metacpo_is_lazy_and_a_later_plain_import_registers_our_ids():
    """``import metacpo`` imports neither Safety-Gymnasium nor MuJoCo; the user's own plain
    ``import safety_gymnasium`` afterwards works on Python 3.11 (the shim) and knows our ids."""
    code = (
        "import sys, metacpo, metacpo.tasks as t\n"
        "t.get_distribution('SafetyPointStcircle1-v0')\n"
        "assert not {'safety_gymnasium', 'mujoco', 'gymnasium'} & set(sys.modules), sorted(sys.modules)\n"
        "import safety_gymnasium\n"
        "env = safety_gymnasium.make('SafetyCarStbutton2-v0')\n"
        "assert type(env.unwrapped).__name__ == 'StochasticBuilder'\n"
        "assert 'SafetyDoggoStcircle0-v0' in t.registered_ids()\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
