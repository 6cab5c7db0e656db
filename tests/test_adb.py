"""Device discovery and errors, against the real adb binary (with no device attached) and real listing formats.

The adb tests start their own adb server on a private port and stop it at the end (``adb kill-server``).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess

import pytest
from maskconver.benchmarks.adb import (
    Adb,
    AdbCommandError,
    AdbNotInstalledError,
    AmbiguousDeviceError,
    DeviceNotFoundError,
    DeviceNotReadyError,
    NoDeviceError,
    device_info_from_props,
    emulator_reasons,
    find_adb,
    parse_devices_output,
    parse_getprop,
    parse_thermal_status,
    select_device,
)

ADB = shutil.which("adb")
needs_adb = pytest.mark.skipif(ADB is None, reason="adb is not installed (apt-get install -y adb)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def private_adb_server():
    """Point adb at a private server port for this module; kill that server afterwards."""
    if ADB is None:
        pytest.skip("adb is not installed (apt-get install -y adb)")
    old = os.environ.get("ANDROID_ADB_SERVER_PORT")
    os.environ["ANDROID_ADB_SERVER_PORT"] = str(_free_port())
    try:
        yield ADB
    finally:
        subprocess.run([ADB, "kill-server"], capture_output=True, timeout=30, check=False)
        if old is None:
            os.environ.pop("ANDROID_ADB_SERVER_PORT", None)
        else:
            os.environ["ANDROID_ADB_SERVER_PORT"] = old


# --- finding adb -----------------------------------------------------------------------------------------
def test_missing_adb_argument_is_not_installed_error(tmp_path):
    missing = tmp_path / "no" / "adb"
    with pytest.raises(AdbNotInstalledError, match=r"apt-get install adb") as ei:
        find_adb(str(missing))
    assert str(missing) in str(ei.value) and "--adb" in str(ei.value)


def test_missing_adb_from_env(monkeypatch, tmp_path):
    monkeypatch.setenv("ADB", str(tmp_path / "adb-not-here"))
    with pytest.raises(AdbNotInstalledError, match=r"\$ADB.*Platform-Tools"):
        find_adb()
    with pytest.raises(AdbNotInstalledError):
        Adb()


def test_adb_absent_from_path(monkeypatch, tmp_path):
    monkeypatch.delenv("ADB", raising=False)
    monkeypatch.delenv("ANDROID_HOME", raising=False)
    monkeypatch.delenv("ANDROID_SDK_ROOT", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(AdbNotInstalledError, match="not installed"):
        find_adb()


def test_non_executable_file_is_rejected(tmp_path):
    fake = tmp_path / "adb"
    fake.write_text("not a program")
    fake.chmod(0o644)
    with pytest.raises(AdbNotInstalledError):
        find_adb(str(fake))


@needs_adb
def test_android_home_platform_tools_is_found(monkeypatch, tmp_path):
    tools = tmp_path / "platform-tools"
    tools.mkdir()
    (tools / "adb").symlink_to(ADB)
    monkeypatch.delenv("ADB", raising=False)
    monkeypatch.setenv("ANDROID_HOME", str(tmp_path))
    assert find_adb() == str(tools / "adb")


# --- the real adb with no device ---------------------------------------------------------------------------
def test_real_adb_lists_no_devices(private_adb_server):
    adb = Adb()
    assert adb.version() is not None
    assert adb.devices() == []
    with pytest.raises(NoDeviceError, match="USB debugging"):
        adb.select("pixel")
    with pytest.raises(NoDeviceError):
        adb.select(None)


def test_real_adb_unknown_serial_shell_fails(private_adb_server):
    adb = Adb().with_serial("0A281FDD4004ZN")
    with pytest.raises(AdbCommandError, match=r"0A281FDD4004ZN") as ei:
        adb.shell("getprop ro.product.model", timeout=30)
    assert ei.value.returncode not in (0, None)


def test_real_adb_push_failure(private_adb_server, tmp_path):
    model = tmp_path / "m.tflite"
    model.write_bytes(b"\0" * 16)
    adb = Adb().with_serial("emulator-5554")
    with pytest.raises(
        AdbCommandError,
        match=r"pushing m\.tflite to /data/local/tmp/m\.tflite failed.*device 'emulator-5554' not found.*adb devices",
    ):
        adb.push(model, "/data/local/tmp/m.tflite", timeout=30)
    with pytest.raises(AdbCommandError, match="no such file"):
        adb.push(tmp_path / "absent.tflite", "/data/local/tmp/x.tflite")


# --- adb devices -l texts, in adb's formats ----------------------------------------------------------------
PIXEL = "1A281FDF6003KE         device usb:1-1 product:oriole model:Pixel_6 device:oriole transport_id:3"
SAMSUNG = "R58M42ABCDE            device usb:1-2 product:beyond1qltesq model:SM_G973U device:beyond1q transport_id:4"
EMULATOR = "emulator-5554          device product:sdk_gphone64_x86_64 model:sdk_gphone64_x86_64 device:emu64xa transport_id:1"  # noqa: E501
UNAUTHORIZED = "98261FFAZ00BJA         unauthorized usb:1-1 transport_id:5"
OFFLINE = "192.168.1.23:5555      offline product:panther model:Pixel_7 device:panther transport_id:6"
NOPERM = (
    "0123456789ABCDEF       no permissions (user in plugdev group; are your udev rules wrong?); "
    "see [http://developer.android.com/tools/device.html] usb:1-4 transport_id:7"
)


def _listing(*lines: str) -> str:
    return "List of devices attached\n" + "\n".join(lines) + "\n\n"


def test_parse_devices_long_listing():
    entries = parse_devices_output(
        "* daemon not running; starting now at tcp:5037\n* daemon started successfully\n"
        + _listing(PIXEL, EMULATOR, UNAUTHORIZED, OFFLINE, NOPERM)
    )
    assert [e.serial for e in entries] == [
        "1A281FDF6003KE",
        "emulator-5554",
        "98261FFAZ00BJA",
        "192.168.1.23:5555",
        "0123456789ABCDEF",
    ]
    pixel = entries[0]
    assert (pixel.state, pixel.model, pixel.product, pixel.device, pixel.usb, pixel.transport_id) == (
        "device", "Pixel_6", "oriole", "oriole", "1-1", "3"
    )  # fmt: skip
    assert not pixel.looks_like_emulator and entries[1].looks_like_emulator
    assert (entries[2].state, entries[2].model, entries[2].transport_id) == ("unauthorized", None, "5")
    assert (entries[3].state, entries[3].model) == ("offline", "Pixel_7")
    assert entries[4].state == "no permissions" and "udev" in entries[4].detail and entries[4].usb == "1-4"


def test_parse_plain_devices_and_empty():
    assert parse_devices_output("List of devices attached\n\n") == []
    [e] = parse_devices_output("List of devices attached\nemulator-5556\tdevice\n")
    assert (e.serial, e.state, e.model) == ("emulator-5556", "device", None)


def test_select_by_model_substring_serial_and_emulator():
    entries = parse_devices_output(_listing(SAMSUNG, EMULATOR, PIXEL))
    assert select_device(entries, "pixel").serial == "1A281FDF6003KE"
    assert select_device(entries, "PIXEL 6").serial == "1A281FDF6003KE"  # space matches adb's underscore
    assert select_device(entries, "R58M42ABCDE").model == "SM_G973U"
    assert select_device(entries, "emulator").serial == "emulator-5554"
    with pytest.raises(DeviceNotFoundError, match="pixel 9"):
        select_device(entries, "pixel 9")


def test_first_matching_model_wins():
    second_pixel = PIXEL.replace("1A281FDF6003KE", "2B000000000000").replace(
        "transport_id:3", "transport_id:9"
    )
    entries = parse_devices_output(_listing(SAMSUNG, PIXEL, second_pixel))
    assert select_device(entries, "pixel").serial == "1A281FDF6003KE"


def test_several_devices_without_selector():
    entries = parse_devices_output(_listing(PIXEL, SAMSUNG))
    with pytest.raises(AmbiguousDeviceError, match=r"2 Android devices.*--device") as ei:
        select_device(entries, None)
    assert "1A281FDF6003KE (Pixel_6, device)" in str(ei.value)


def test_single_device_without_selector():
    assert select_device(parse_devices_output(_listing(PIXEL)), None).model == "Pixel_6"


@pytest.mark.parametrize(
    ("line", "selector", "state", "words"),
    [
        (UNAUTHORIZED, None, "unauthorized", "Allow USB debugging"),
        (
            UNAUTHORIZED,
            "pixel",
            "unauthorized",
            "Allow USB debugging",
        ),  # its model is hidden until authorized
        (OFFLINE, "pixel", "offline", "kill-server"),
        (OFFLINE, "192.168.1.23:5555", "offline", "adb connect"),
        (NOPERM, None, "no permissions", "udev"),
    ],
)
def test_not_ready_devices(line, selector, state, words):
    with pytest.raises(DeviceNotReadyError, match=words) as ei:
        select_device(parse_devices_output(_listing(line)), selector)
    assert ei.value.state == state


def test_no_device_listing():
    with pytest.raises(NoDeviceError):
        select_device(parse_devices_output(_listing()), "pixel")


# --- properties --------------------------------------------------------------------------------------------
PIXEL6_GETPROP = """\
[ro.board.platform]: [gs101]
[ro.boot.hardware.platform]: [gs101]
[ro.build.fingerprint]: [google/oriole/oriole:14/AP2A.240805.005/12025142:user/release-keys]
[ro.build.version.release]: [14]
[ro.build.version.sdk]: [34]
[ro.hardware]: [oriole]
[ro.kernel.qemu]: []
[ro.product.brand]: [google]
[ro.product.cpu.abi]: [arm64-v8a]
[ro.product.cpu.abilist]: [arm64-v8a,armeabi-v7a,armeabi]
[ro.product.device]: [oriole]
[ro.product.manufacturer]: [Google]
[ro.product.model]: [Pixel 6]
[ro.soc.manufacturer]: [Google]
[ro.soc.model]: [Tensor]
"""

EMULATOR_GETPROP = """\
[ro.boot.qemu]: [1]
[ro.build.version.release]: [15]
[ro.build.version.sdk]: [35]
[ro.hardware]: [ranchu]
[ro.kernel.qemu]: [1]
[ro.product.cpu.abi]: [x86_64]
[ro.product.model]: [sdk_gphone64_x86_64]
[ro.soc.model]: []
"""


def test_pixel_props_make_a_comparable_device():
    props = parse_getprop(PIXEL6_GETPROP)
    assert props["ro.product.model"] == "Pixel 6" and props["ro.kernel.qemu"] == ""
    info = device_info_from_props("1A281FDF6003KE", props)
    assert (info.model, info.manufacturer, info.soc, info.soc_manufacturer, info.board_platform) == (
        "Pixel 6", "Google", "Tensor", "Google", "gs101"
    )  # fmt: skip
    assert (info.android_version, info.sdk, info.abi) == ("14", 34, "arm64-v8a")
    assert info.abi_list == ["arm64-v8a", "armeabi-v7a", "armeabi"]
    assert not info.is_emulator and info.comparable and info.emulator_reasons == []
    assert info.to_dict()["comparable"] is True


def test_emulator_props_are_functional_only():
    info = device_info_from_props("emulator-5554", parse_getprop(EMULATOR_GETPROP))
    assert info.is_emulator and not info.comparable
    assert info.emulator_reasons == [
        "ro.kernel.qemu=1",
        "ro.boot.qemu=1",
        "ro.hardware=ranchu",
        "x86 ABI (x86_64)",
        "serial emulator-5554",
    ]
    assert info.soc == "ranchu"  # ro.soc.model is empty, so the fallback chain reaches ro.hardware


def test_soc_falls_back_to_board_platform():
    info = device_info_from_props("x", {"ro.board.platform": "taro", "ro.hardware": "qcom"})
    assert info.soc == "taro"
    assert emulator_reasons({"ro.hardware": "goldfish"}) == ["ro.hardware=goldfish"]
    assert emulator_reasons({"ro.product.cpu.abi": "x86"}) == ["x86 ABI (x86)"]


def test_thermal_status():
    text = "IsStatusOverride: false\nThermal Status: 2\nCached temperatures:\n"
    assert parse_thermal_status(text) == 2
    assert parse_thermal_status("nothing") is None
