"""Android device discovery and commands over the real ``adb`` binary.

* :func:`find_adb` locates ``adb`` (argument, ``$ADB``, ``$ANDROID_HOME``/``$ANDROID_SDK_ROOT`` platform-tools,
  then ``PATH``) and raises :class:`AdbNotInstalledError` with an install hint when it is missing.
* :func:`parse_devices_output` reads ``adb devices -l``; :func:`select_device` picks one entry by serial,
  by model-name substring (``"pixel"`` matches the first device whose model contains it, case-insensitive),
  ``"emulator"``, or the only device, and raises a clear error for no device, unauthorized, offline,
  no permissions, a selector that matches nothing, and several devices with no selector.
* :func:`parse_getprop` / :func:`device_info_from_props` record model, SoC, Android version and ABI, and
  :func:`emulator_reasons` flags emulators (``ro.kernel.qemu``, ``ro.boot.qemu``, goldfish/ranchu hardware,
  x86 ABI, ``emulator-`` serials) whose numbers are functional only, not comparable.
* :class:`Adb` runs ``adb -s SERIAL ...`` with time limits and turns failures (push, shell) into
  :class:`AdbCommandError` naming the command and adb's own message.

Every error is an :class:`AdbError` whose message says what is wrong and how to fix it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "Adb",
    "AdbCommandError",
    "AdbError",
    "AdbNotInstalledError",
    "AmbiguousDeviceError",
    "DeviceEntry",
    "DeviceInfo",
    "DeviceNotFoundError",
    "DeviceNotReadyError",
    "NoDeviceError",
    "device_info_from_props",
    "emulator_reasons",
    "find_adb",
    "parse_devices_output",
    "parse_getprop",
    "select_device",
]

INSTALL_HINT = (
    "install adb: `apt-get install adb` (Debian/Ubuntu), or download Android SDK Platform-Tools and put "
    "platform-tools/ on PATH; or point --adb / the ADB environment variable at the adb binary"
)


class AdbError(RuntimeError):
    """Base class: something about adb or the device prevents the run. The message says how to fix it."""


class AdbNotInstalledError(AdbError):
    pass


class NoDeviceError(AdbError):
    pass


class DeviceNotReadyError(AdbError):
    """The device is listed but not usable: unauthorized, offline, no permissions, bootloader ..."""

    def __init__(self, message: str, state: str) -> None:
        super().__init__(message)
        self.state = state


class AmbiguousDeviceError(AdbError):
    pass


class DeviceNotFoundError(AdbError):
    pass


class AdbCommandError(AdbError):
    """An adb command (push, shell, getprop) failed or timed out."""

    def __init__(self, message: str, returncode: int | None = None, output: str = "") -> None:
        super().__init__(message)
        self.returncode = returncode
        self.output = output


# --- finding adb -------------------------------------------------------------------------------------------
def find_adb(adb: str | os.PathLike[str] | None = None) -> str:
    """Return the path of a runnable ``adb``.

    Order: the ``adb`` argument, ``$ADB``, ``$ANDROID_HOME/platform-tools/adb``,
    ``$ANDROID_SDK_ROOT/platform-tools/adb``, then ``adb`` on ``PATH``. An explicit argument or ``$ADB`` that
    does not exist is an error (no silent fallback to another adb).
    """
    explicit = adb if adb is not None else os.environ.get("ADB") or None
    if explicit is not None:
        source = "--adb" if adb is not None else "$ADB"
        path = Path(explicit)
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
        found = shutil.which(str(explicit)) if os.sep not in str(explicit) else None
        if found:
            return found
        raise AdbNotInstalledError(f"adb not found at {explicit!s} (from {source}); {INSTALL_HINT}")
    for var in ("ANDROID_HOME", "ANDROID_SDK_ROOT"):
        root = os.environ.get(var)
        if root:
            cand = Path(root) / "platform-tools" / "adb"
            if cand.is_file() and os.access(cand, os.X_OK):
                return str(cand)
    found = shutil.which("adb")
    if found:
        return found
    raise AdbNotInstalledError(f"adb is not installed (not on PATH, $ADB unset); {INSTALL_HINT}")


# --- adb devices -l ----------------------------------------------------------------------------------------
@dataclass
class DeviceEntry:
    """One line of ``adb devices -l``."""

    serial: str
    state: str  # device | unauthorized | offline | no permissions | bootloader | recovery | sideload | ...
    model: str | None = None  # as adb prints it, spaces replaced by "_" (e.g. "Pixel_6")
    product: str | None = None
    device: str | None = None
    usb: str | None = None
    transport_id: str | None = None
    detail: str = ""  # adb's extra words, e.g. the udev hint of "no permissions"

    @property
    def looks_like_emulator(self) -> bool:
        """A guess from the listing alone (the device properties decide later)."""
        text = " ".join(x for x in (self.serial, self.model, self.product, self.device) if x).lower()
        return self.serial.startswith("emulator-") or any(
            key in text for key in ("sdk_gphone", "sdk_phone", "emulator", "generic_x86", "emu64")
        )


_KNOWN_KEYS = ("usb", "product", "model", "device", "transport_id")


def parse_devices_output(text: str) -> list[DeviceEntry]:
    """Parse ``adb devices -l`` (or plain ``adb devices``) output into entries, in adb's order.

    Skips the header, the ``* daemon ...`` notices and blank lines. Handles the multi-word ``no permissions
    (...)`` state.
    """
    entries: list[DeviceEntry] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("*") or line.startswith("List of devices") or line.startswith("adb "):
            continue
        parts = line.split(None, 1)
        if len(parts) < 2:
            continue
        serial, rest = parts
        kv: dict[str, str] = {}
        words = rest.split()
        # key:value tokens sit at the end of the line.
        while words and ":" in words[-1] and words[-1].split(":", 1)[0] in _KNOWN_KEYS:
            key, value = words.pop().split(":", 1)
            kv[key] = value
        rest_text = " ".join(words)
        if rest_text.startswith("no permissions"):
            state, detail = "no permissions", rest_text[len("no permissions") :].strip()
        elif words:
            state, detail = words[0], " ".join(words[1:])
        else:
            continue
        entries.append(
            DeviceEntry(
                serial=serial,
                state=state,
                model=kv.get("model"),
                product=kv.get("product"),
                device=kv.get("device"),
                usb=kv.get("usb"),
                transport_id=kv.get("transport_id"),
                detail=detail,
            )
        )
    return entries


_STATE_HINTS = {
    "unauthorized": (
        "is unauthorized: unlock the phone and accept the 'Allow USB debugging?' prompt (tick 'Always allow'); "
        "if no prompt shows, revoke USB debugging authorizations in Developer options and reconnect"
    ),
    "offline": (
        "is offline: reconnect the cable, or run `adb kill-server` and try again; on Wi-Fi debugging, "
        "`adb connect HOST:PORT` again"
    ),
    "no permissions": (
        "cannot be opened (no permissions): add a udev rule for the device (package android-sdk-platform-tools-"
        "common provides them) and make sure your user is in the plugdev group, then replug"
    ),
    "authorizing": "is still authorizing: accept the prompt on the phone and retry in a few seconds",
    "connecting": "is still connecting: retry in a few seconds",
    "bootloader": "is in the bootloader: boot Android first",
    "recovery": "is in recovery mode: boot Android first",
    "sideload": "is in sideload mode: boot Android first",
}


def _not_ready(entry: DeviceEntry) -> DeviceNotReadyError:
    hint = _STATE_HINTS.get(entry.state, f"is in state '{entry.state}', not 'device': reconnect it and retry")
    return DeviceNotReadyError(f"Android device {entry.serial} {hint}", entry.state)


def _describe(entries: list[DeviceEntry]) -> str:
    return ", ".join(f"{e.serial} ({e.model or 'model unknown'}, {e.state})" for e in entries)


def _norm(text: str) -> str:
    return re.sub(r"[\s_]+", "_", text.strip().lower())


def select_device(entries: list[DeviceEntry], selector: str | None = None) -> DeviceEntry:
    """Pick the device to run on and check it is ready.

    ``selector``: ``None`` / ``""`` / ``"android"`` (the only device), an exact serial, ``"emulator"`` (the first
    emulator), or a model-name substring matched case-insensitively with spaces and underscores treated alike
    (``"pixel"`` matches ``Pixel_6``; the first match in adb's order wins).
    """
    if not entries:
        raise NoDeviceError(
            "no Android device found by `adb devices`: connect a phone with USB debugging enabled "
            "(Settings > About phone > tap Build number 7 times, then Developer options > USB debugging), "
            "or start an emulator; then check `adb devices -l`"
        )
    sel = (selector or "").strip()
    if sel.lower() in ("", "android", "device", "any"):
        if len(entries) > 1:
            raise AmbiguousDeviceError(
                f"{len(entries)} Android devices are attached: {_describe(entries)}; choose one with "
                "--device SERIAL or --device MODEL-SUBSTRING (e.g. --device pixel)"
            )
        chosen = entries[0]
    else:
        exact = [e for e in entries if e.serial == sel]
        if exact:
            chosen = exact[0]
        elif sel.lower() == "emulator":
            emus = [e for e in entries if e.looks_like_emulator]
            if not emus:
                raise DeviceNotFoundError(
                    f"no emulator among the attached devices ({_describe(entries)}); start one with "
                    "`emulator -avd NAME` or pick a device by serial"
                )
            chosen = emus[0]
        else:
            want = _norm(sel)
            matches = [e for e in entries if e.model and want in _norm(e.model)]
            if not matches:
                unknown = [e for e in entries if e.model is None and e.state != "device"]
                if unknown:
                    # Unauthorized/offline devices do not report their model: it may be the one asked for.
                    raise _not_ready(unknown[0])
                raise DeviceNotFoundError(
                    f"no attached device has serial '{sel}' or a model containing '{sel}'; attached: "
                    f"{_describe(entries)}"
                )
            chosen = matches[0]
    if chosen.state != "device":
        raise _not_ready(chosen)
    return chosen


# --- device properties -------------------------------------------------------------------------------------
_GETPROP_LINE = re.compile(r"^\[([^\]]+)\]: \[(.*)\]$")


def parse_getprop(text: str) -> dict[str, str]:
    """Parse ``adb shell getprop`` output (``[key]: [value]`` per line)."""
    props: dict[str, str] = {}
    for line in text.splitlines():
        m = _GETPROP_LINE.match(line.strip())
        if m:
            props[m.group(1)] = m.group(2)
    return props


def emulator_reasons(props: dict[str, str], serial: str = "") -> list[str]:
    """Why this device is an emulator (an empty list for a real phone)."""
    reasons = []
    if props.get("ro.kernel.qemu") == "1":
        reasons.append("ro.kernel.qemu=1")
    if props.get("ro.boot.qemu") == "1":
        reasons.append("ro.boot.qemu=1")
    hw = props.get("ro.hardware", "")
    if hw in ("goldfish", "ranchu") or hw.startswith(("goldfish", "ranchu")):
        reasons.append(f"ro.hardware={hw}")
    abi = props.get("ro.product.cpu.abi", "")
    if abi.startswith("x86"):
        reasons.append(f"x86 ABI ({abi})")
    if serial.startswith("emulator-"):
        reasons.append(f"serial {serial}")
    return reasons


@dataclass
class DeviceInfo:
    """What the report records about the device."""

    serial: str
    model: str | None = None
    manufacturer: str | None = None
    brand: str | None = None
    device: str | None = None
    soc: str | None = None  # best of ro.soc.model, ro.board.platform, ro.hardware
    soc_manufacturer: str | None = None
    board_platform: str | None = None
    hardware: str | None = None
    android_version: str | None = None
    sdk: int | None = None
    abi: str | None = None
    abi_list: list[str] = field(default_factory=list)
    fingerprint: str | None = None
    is_emulator: bool = False
    emulator_reasons: list[str] = field(default_factory=list)

    @property
    def comparable(self) -> bool:
        """False on an emulator: its numbers are functional only, not comparable to a phone's."""
        return not self.is_emulator

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["comparable"] = self.comparable
        return d


def device_info_from_props(serial: str, props: dict[str, str]) -> DeviceInfo:
    """Build :class:`DeviceInfo` from a ``getprop`` dict."""

    def get(*keys: str) -> str | None:
        for k in keys:
            v = props.get(k, "").strip()
            if v:
                return v
        return None

    sdk_text = get("ro.build.version.sdk")
    abi_list = [a for a in (get("ro.product.cpu.abilist") or "").split(",") if a]
    reasons = emulator_reasons(props, serial)
    return DeviceInfo(
        serial=serial,
        model=get("ro.product.model"),
        manufacturer=get("ro.product.manufacturer"),
        brand=get("ro.product.brand"),
        device=get("ro.product.device"),
        soc=get("ro.soc.model", "ro.board.platform", "ro.hardware"),
        soc_manufacturer=get("ro.soc.manufacturer"),
        board_platform=get("ro.board.platform"),
        hardware=get("ro.hardware"),
        android_version=get("ro.build.version.release"),
        sdk=int(sdk_text) if sdk_text and sdk_text.isdigit() else None,
        abi=get("ro.product.cpu.abi"),
        abi_list=abi_list,
        fingerprint=get("ro.build.fingerprint"),
        is_emulator=bool(reasons),
        emulator_reasons=reasons,
    )


_THERMAL_STATUS = re.compile(r"Thermal Status:\s*(\d+)")


def parse_thermal_status(text: str) -> int | None:
    """The ``Thermal Status: N`` of ``dumpsys thermalservice`` (0 none ... 6 shutdown), or None."""
    m = _THERMAL_STATUS.search(text)
    return int(m.group(1)) if m else None


def _adb_message(text: str) -> str:
    """adb's own error line, without the ``* daemon ...`` server notices."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("* daemon")]
    errors = [ln for ln in lines if "error" in ln.lower() or "not found" in ln.lower()]
    return (errors or lines or ["no output"])[-1]


# --- running adb -------------------------------------------------------------------------------------------
class Adb:
    """A thin runner for the real ``adb`` binary, optionally bound to one device serial."""

    def __init__(self, path: str | None = None, serial: str | None = None, timeout: float = 60.0) -> None:
        self.path = find_adb(path)
        self.serial = serial
        self.timeout = timeout

    def with_serial(self, serial: str) -> Adb:
        other = Adb.__new__(Adb)
        other.path, other.serial, other.timeout = self.path, serial, self.timeout
        return other

    def _argv(self, args: list[str]) -> list[str]:
        base = [self.path]
        if self.serial:
            base += ["-s", self.serial]
        return base + list(args)

    def run(
        self, args: list[str], timeout: float | None = None, check: bool = True
    ) -> subprocess.CompletedProcess:
        """Run ``adb [-s SERIAL] ARGS``; stdout and stderr are captured as text."""
        argv = self._argv(args)
        try:
            proc = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                errors="replace",
                timeout=timeout or self.timeout,
                stdin=subprocess.DEVNULL,
            )
        except FileNotFoundError as e:
            raise AdbNotInstalledError(f"adb could not be started ({e}); {INSTALL_HINT}") from e
        except subprocess.TimeoutExpired as e:
            raise AdbCommandError(
                f"`{' '.join(argv)}` did not finish within {timeout or self.timeout:.0f} s; check the device "
                "is responsive (`adb devices -l`) or raise the time limit",
                None,
                (e.stdout or "") if isinstance(e.stdout, str) else "",
            ) from e
        if check and proc.returncode != 0:
            msg = _adb_message(proc.stderr + "\n" + proc.stdout)
            raise AdbCommandError(
                f"`{' '.join(argv)}` failed (exit {proc.returncode}): {msg}",
                proc.returncode,
                proc.stdout + proc.stderr,
            )
        return proc

    def version(self) -> str | None:
        proc = self.run(["version"], timeout=15, check=False)
        m = re.search(r"Android Debug Bridge version (\S+)", proc.stdout)
        v = re.search(r"Version (\S+)", proc.stdout)
        if not m:
            return None
        return m.group(1) + (f" ({v.group(1)})" if v else "")

    def devices(self) -> list[DeviceEntry]:
        """The attached devices (starts the adb server when none runs)."""
        unbound = Adb.with_serial(self, "")
        proc = unbound.run(["devices", "-l"], timeout=30, check=False)
        if proc.returncode != 0:
            raise AdbCommandError(
                f"`adb devices -l` failed (exit {proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}; "
                "try `adb kill-server` and retry",
                proc.returncode,
                proc.stdout + proc.stderr,
            )
        return parse_devices_output(proc.stdout)

    def select(self, selector: str | None = None) -> Adb:
        """Choose a device (see :func:`select_device`) and return a runner bound to its serial."""
        entry = select_device(self.devices(), selector)
        return self.with_serial(entry.serial)

    def shell(
        self, command: str, timeout: float | None = None, check: bool = True
    ) -> subprocess.CompletedProcess:
        return self.run(["shell", command], timeout=timeout, check=check)

    def getprop(self) -> dict[str, str]:
        return parse_getprop(self.shell("getprop", timeout=30).stdout)

    def device_info(self) -> DeviceInfo:
        if not self.serial:
            raise AdbError("no device chosen: call select() first")
        return device_info_from_props(self.serial, self.getprop())

    def thermal_status(self) -> int | None:
        proc = self.shell("dumpsys thermalservice", timeout=30, check=False)
        return parse_thermal_status(proc.stdout) if proc.returncode == 0 else None

    def push(self, local: str | os.PathLike[str], remote: str, timeout: float = 300.0) -> None:
        """``adb push LOCAL REMOTE``; a missing local file or a failed push is an :class:`AdbCommandError`."""
        local_path = Path(local)
        if not local_path.is_file():
            raise AdbCommandError(f"cannot push {local_path}: no such file")
        try:
            self.run(["push", str(local_path), remote], timeout=timeout)
        except AdbCommandError as e:
            if "not found" in str(e) and "device" in str(e):
                hint = "the device is gone: check the cable and `adb devices -l`"
            else:
                hint = (
                    "check free space on the device (`adb shell df /data/local/tmp`) and that the directory "
                    "is writable"
                )
            raise AdbCommandError(
                f"pushing {local_path.name} to {remote} failed: {e}. Fix: {hint}",
                e.returncode,
                e.output,
            ) from e

    def kill_server(self) -> None:
        """Stop the adb server this runner talks to (``adb kill-server``)."""
        Adb.with_serial(self, "").run(["kill-server"], timeout=15, check=False)
