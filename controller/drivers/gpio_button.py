"""The court's replay button: a push button on a Raspberry Pi GPIO pin, read with gpiozero.

Wiring: one leg of a normally-open push button on the pin (`MARK_GPIO_PIN`, BCM numbering:
`17`, `GPIO17`, or a physical pin as `BOARD11`), the other on ground; the Pi's internal pull-up
holds the pin high until the button pulls it low. gpiozero calls `on_press` from its own
thread; the callback must be quick and must not raise (errors are logged here, so a refused
mark never kills the button).

Tested at gpiozero's boundary with its mock pin factory (`gpiozero.pins.mock.MockFactory`),
not on a real pin.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

log = logging.getLogger("ezrec.button")

# Contacts chatter for a few milliseconds; repeated real presses are merged by the marks
# themselves (`controller.fsm.marks.SAME_MOMENT_S`), not here.
BOUNCE_S = 0.05
PIN_NAME = re.compile(r"^(?:(?:GPIO|BCM)?\d{1,2}|BOARD\d{1,2}|J8:\d{1,2})$")


class ButtonError(Exception):
    """The button cannot be opened (no GPIO on this machine, pin taken, bad pin name)."""


def parse_pin(value: str) -> int | str:
    """A pin as gpiozero takes it: bare BCM numbers as int, named pins as given."""
    text = value.strip().upper()
    if not PIN_NAME.fullmatch(text):
        raise ButtonError(
            f"{value!r} is not a GPIO pin (use a BCM number such as 17, GPIO17 or BOARD11)"
        )
    return int(text) if text.isdigit() else text


class MarkButton:
    """One push button; `on_press()` is called once per press, in gpiozero's thread."""

    def __init__(
        self,
        pin: str,
        on_press: Callable[[], Any],
        *,
        pin_factory: Any = None,
        bounce_s: float = BOUNCE_S,
    ) -> None:
        try:
            from gpiozero import Button
            from gpiozero.exc import GPIOZeroError
        except ImportError as exc:  # gpiozero is a dependency; this is a broken install
            raise ButtonError(f"gpiozero is not installed: {exc}") from None
        self.pin = parse_pin(pin)
        self._on_press = on_press
        try:
            self._button = Button(
                self.pin, pull_up=True, bounce_time=bounce_s, pin_factory=pin_factory
            )
        except (GPIOZeroError, OSError, RuntimeError, ValueError) as exc:
            raise ButtonError(f"replay button on pin {pin}: {exc}") from None
        self._button.when_pressed = self._pressed

    def _pressed(self) -> None:
        try:
            self._on_press()
        except Exception:  # a gpiozero thread that dies would leave the button dead
            log.exception("replay button: press not handled")

    @property
    def is_pressed(self) -> bool:
        return bool(self._button.is_pressed)

    def stop(self) -> None:
        """Release the pin (a sidecar of the supervisor: stopped with it)."""
        self._button.close()
