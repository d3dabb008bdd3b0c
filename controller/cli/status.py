"""`ezrec status`: the health report of `controller.health`, as lines or `--json`."""

from __future__ import annotations

import click

from controller.cli.context import context
from controller.cli.output import detail_text, json_option, out, print_json
from controller.health import collect


@click.command()
@json_option
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Health: supervisor, cameras, disk, queue per state, last errors."""
    c = context(ctx)
    report = collect(c.settings, c.store)
    if as_json:
        print_json(report)
        return
    sup = report["supervisor"]
    age = sup.get("heartbeat_age_s")
    running = "running" if sup["running"] else "NOT running"
    out.print(
        f"supervisor  {running}"
        + (f" (heartbeat {age:.0f} s ago: {sup.get('status')})" if age is not None else ""),
        markup=False,
    )
    disk = report["disk"]
    flag = "" if disk["ok"] else f"  LOW: below EZREC_MIN_FREE_DISK_MB={disk['min_free_mb']}"
    if not disk["reserve_ok"]:
        flag = "  FULL: the database's reserve was used (EZREC_DISK_RESERVE_MB): free some space"
    out.print(f"disk        {disk['free_mb']:.0f} MB free of {disk['total_mb']:.0f} MB{flag}",
              markup=False)
    for cam in report["cameras"]:
        up = "up" if cam.get("up") else "DOWN"
        out.print(f"camera {cam.get('index')}    {up} {cam.get('driver', '')} "
                  f"{cam.get('mode', '')} {cam.get('detail', '')}".rstrip(), markup=False)
    queue = "  ".join(f"{k}={v}" for k, v in report["queue"].items() if v)
    out.print(f"bookings    {queue or 'none'}", markup=False)
    for item in report["in_progress"]:
        pct = "" if item["progress"] is None else f" {item['progress'] * 100:.0f}%"
        more = detail_text(item.get("detail"))
        more = f" ({more})" if more else ""
        out.print(f"  {item['id']}: {item['state']} {item['stage'] or ''}{pct}{more}".rstrip(),
                  markup=False)
    sysinfo = report["system"]
    temp = sysinfo.get("temperature_c")
    out.print(
        f"system      cpu {sysinfo.get('cpu_percent', 0):.0f}%  "
        f"memory {sysinfo.get('memory_percent', 0):.0f}%"
        + (f"  {temp:.0f} °C" if temp is not None else ""),
        markup=False,
    )
    for item in report["needs_operator"]:
        out.print(f"NEEDS YOU   {item['id']} ({item['state']}): {item['error']} - {item['fix']}",
                  markup=False)
    if report["last_errors"]:
        out.print("last errors", markup=False)
        for line in report["last_errors"][-10:]:
            out.print(f"  {line}", markup=False)
