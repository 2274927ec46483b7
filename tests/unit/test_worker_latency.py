"""The emulated device's latency model (device_profile.py) and the profiles shipped with it."""

from __future__ import annotations

from pathlib import Path

import pytest

from modm.services.worker.device_profile import DeviceProfile, ProfileError, load_profile, shipped_profiles


def profile(**changes: object) -> DeviceProfile:
    fields: dict[str, object] = dict(
        name="test",
        family="sd",
        role="small",
        model="m",
        device="gpu",
        dtype="fp16",
        width=512,
        height=512,
        size_multiple=8,
        default_steps=50,
        seconds_per_step=0.1,
        overhead_seconds=0.5,
        load_seconds=3.0,
    )
    fields.update(changes)
    return DeviceProfile(**fields)  # type: ignore[arg-type]


def call(p: DeviceProfile, steps: int, batch: int = 1, width: int = 512, height: int = 512) -> float:
    overhead, per_step = p.call_seconds(batch, width, height)
    return overhead + steps * per_step


def test_a_call_is_overhead_plus_steps_times_the_step() -> None:
    assert call(profile(), 1) == pytest.approx(0.6)
    assert call(profile(), 50) == pytest.approx(5.5)
    assert call(profile(), 50) - call(profile(), 40) == pytest.approx(10 * 0.1)


def test_time_is_linear_in_pixels() -> None:
    assert call(profile(), 20, width=1024, height=1024) == pytest.approx(4 * call(profile(), 20))
    assert call(profile(), 20, width=512, height=256) == pytest.approx(call(profile(), 20) / 2)


def test_the_batch_curve_is_interpolated_between_points_and_proportional_past_the_last() -> None:
    curved = profile(batch={2: 1.8, 4: 3.0})
    assert [curved.batch_factor(b) for b in (1, 2, 3, 4)] == pytest.approx([1.0, 1.8, 2.4, 3.0])
    assert curved.batch_factor(8) == pytest.approx(6.0)  # 3.0 per 4 images, as at the last point
    assert call(curved, 10, batch=3) == pytest.approx(2.4 * call(curved, 10))


def test_without_batch_points_a_batch_takes_as_long_as_its_images_one_by_one() -> None:
    assert [profile().batch_factor(b) for b in (1, 2, 5)] == pytest.approx([1.0, 2.0, 5.0])


def test_batch_one_is_the_unit() -> None:
    with pytest.raises(ValueError, match="batch 1 is the unit"):
        profile(batch={1: 0.9, 2: 1.5})


def test_time_scale_multiplies_every_duration() -> None:
    fast = profile(batch={2: 1.5}).scaled(0.1)
    assert (fast.seconds_per_step, fast.overhead_seconds, fast.load_seconds) == pytest.approx((0.01, 0.05, 0.3))
    assert fast.batch_factor(2) == 1.5


@pytest.mark.parametrize(
    ("name", "steps", "batch", "seconds"),
    [
        ("sdxl-a100", 50, 1, 6.10),
        ("sdxl-a100", 50, 2, 10.65),
        ("sdxl-a100", 50, 16, 79.11),
        ("sd1.5-a100", 50, 1, 1.78),
        ("sd1.5-a100", 50, 8, 6.79),
        ("sd1.5-a100", 50, 32, 25.35),
        ("sd3-medium-a100", 50, 1, 5.62247),
        ("sd3.5-large-a100", 50, 1, 22.30),
        ("flux.1-dev-a100", 28, 1, 2 * 6.71),
        ("flux.1-schnell-a100", 4, 1, 2 * 1.5),
        ("sana-1.6b-a100", 20, 1, 1.2),
        ("sana-0.6b-a100", 20, 1, 0.9),
    ],
)
def test_every_shipped_profile_reproduces_its_source(name: str, steps: int, batch: int, seconds: float) -> None:
    shipped = load_profile(name)
    assert call(shipped, steps, batch, shipped.width, shipped.height) == pytest.approx(seconds, rel=1e-3)


def test_shipped_profiles_are_all_tested_and_sorted_into_roles() -> None:
    roles = {name: load_profile(name).role for name in shipped_profiles()}
    assert roles == {
        "flux.1-dev-a100": "large",
        "flux.1-schnell-a100": "large",
        "sana-0.6b-a100": "small",
        "sana-1.6b-a100": "small",
        "sd1.5-a100": "small",
        "sd3-medium-a100": "large",
        "sd3.5-large-a100": "large",
        "sdxl-a100": "small",
    }
    for name in shipped_profiles():
        shipped = load_profile(name)
        assert shipped.width % shipped.size_multiple == 0 and shipped.load_seconds > 0


def test_a_written_profile_loads_back(tmp_path: Path) -> None:
    written = profile(batch={2: 1.75, 4: 3.25}, recorded="2025-01-01T00:00:00+00:00")
    path = tmp_path / "my-gpu.toml"
    path.write_text(written.to_toml("Recorded in a test.\nTwo lines of comment."))
    assert load_profile(str(path)) == written.model_copy(update={"name": "my-gpu"})


def test_an_unknown_profile_names_the_shipped_ones() -> None:
    with pytest.raises(ProfileError, match=r"not a shipped profile \(flux.1-dev-a100, .*sdxl-a100\)"):
        load_profile("sdxl-b200")


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (lambda text: text.replace("seconds_per_step", "seconds_per_stp"), "seconds_per_stp"),
        (lambda text: text.replace('family = "sd"', 'family = "sd9"'), "unknown family 'sd9'"),
        (lambda text: text.replace('role = "small"', 'role = "medium"'), "role"),
        (lambda text: text + "= broken", "Invalid"),
    ],
)
def test_a_broken_profile_file_says_what_is_wrong(tmp_path: Path, edit: object, problem: str) -> None:
    path = tmp_path / "broken.toml"
    path.write_text(edit(profile().to_toml("test")))  # type: ignore[operator]
    with pytest.raises(ProfileError, match=problem) as info:
        load_profile(str(path))
    assert str(path) in str(info.value)
