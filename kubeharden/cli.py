"""The `kubeharden` command line."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from datetime import date
from pathlib import Path

from kubeharden import __version__, collection, drift, history, waivers
from kubeharden import images as images_module
from kubeharden.audit import AuditError, audit_and_record, check_inventory, inventory_waivers, run_audit, today
from kubeharden.formats import FORMATS, render
from kubeharden.formats import history as history_report
from kubeharden.runner import (
    BUNDLED,
    AnsibleOptions,
    Progress,
    RunError,
    default_inventory,
    run_playbook,
    use_ansible_options,
)

EXIT_ERROR = 2

try:  # the node lab is for kubeharden's own development and tests: in a checkout, not in the wheel
    from kubeharden.lab import cli as lab_cli
except ImportError:
    lab_cli = None
LAB_ERRORS = lab_cli.ERRORS if lab_cli else ()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kubeharden", description="Harden Kubernetes nodes and prove it.")
    parser.add_argument("--version", action="version", version=f"kubeharden {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    if lab_cli:
        lab_cli.add_parser(commands)
    audit = commands.add_parser("audit", help="evaluate the control catalogue on every node of an inventory",
                                description="Exit codes: 0 nothing fails at or above --fail-on; 1 a control "
                                            "fails; 2 the audit is incomplete (unreachable host, bad inventory, "
                                            "a control in error).")
    _inventory_argument(audit)
    audit.add_argument("--limit", help="Ansible host pattern to audit only some nodes")
    audit.add_argument("--format", choices=sorted(FORMATS["audit"]), default="table")
    audit.add_argument("--output", help="write the report to this file instead of standard output")
    audit.add_argument("--controls", action="append", metavar="ID",
                       help="only these controls, by ID or prefix (1.2, KH-OS); repeatable or comma-separated")
    audit.add_argument("--skip", action="append", metavar="ID", help="skip controls by ID or prefix")
    audit.add_argument("--fail-on", choices=("low", "medium", "high"), default="low",
                       help="lowest severity whose failure gives exit code 1 (default: low)")
    audit.add_argument("-v", "--verbose", action="store_true", help="table: list every control, not only failures")
    _run_arguments(audit)

    check = commands.add_parser(
        "drift", help="which controls drifted from the hardened state, the diff that restores them, and the fix",
        description="Runs the audit and playbooks/site.yml in check and diff mode. Exit codes: 0 no drift; 1 a "
                    "control drifted (after --remediate: still drifted); 2 a node could not be checked or remediated, "
                    "or a control could not be judged.")
    _inventory_argument(check)
    check.add_argument("--limit", help="Ansible host pattern to check only some nodes")
    check.add_argument("--format", choices=sorted(FORMATS["drift"]), default="table")
    check.add_argument("--output", help="write the report to this file instead of standard output")
    check.add_argument("--remediate", action="store_true",
                       help="apply the fixes of the drifted controls only (site.yml by tag), then check again")
    _run_arguments(check)

    validate = commands.add_parser(
        "validate", help="check every role's variables for every node of an inventory, offline (no node contacted)",
        description="The checks site.yml runs before any change (playbooks/validate.yml): each role's argument "
                    "spec, then ranges, networks, ports and rules between variables. Exit codes: 0 valid; 2 a "
                    "variable is not, or the inventory could not be read.")
    _inventory_argument(validate)

    waive = commands.add_parser(
        "waive", help="write waivers (kubeharden_waivers) for every control failing now, for review",
        description="--baseline audits the inventory and writes one waiver per failing control (its failing "
                    "nodes as hosts) with reason TODO, which the validation refuses until a person writes one. "
                    "Exit codes: 0 written; 2 the audit could not run.")
    _inventory_argument(waive)
    waive.add_argument("--baseline", action="store_true", required=True,
                       help="one waiver for every control failing now")
    waive.add_argument("--owner", required=True, help="who answers for the waivers (a team or a person)")
    waive.add_argument("--expires", required=True, type=_future_date, metavar="YYYY-MM-DD",
                       help="when the waivers expire")
    waive.add_argument("--limit", help="Ansible host pattern to audit only some nodes")
    waive.add_argument("--controls", action="append", metavar="ID", help="only these controls, by ID or prefix")
    waive.add_argument("--output", help="write the waivers to this file instead of standard output")

    packaging = commands.add_parser("collection", help="the Ansible collection kubeharden.hardening")
    packaging_commands = packaging.add_subparsers(dest="collection_command", required=True)
    tarball = packaging_commands.add_parser(
        "build", help="write the collection tarball that `ansible-galaxy collection install` takes offline")
    tarball.add_argument("--output", default=".", help="directory for the tarball (default: the current one)")

    images = commands.add_parser("images", help="every image the cluster runs, with the digest its node resolved "
                                                "(the input of an image scanner)",
                                 description="Exit codes: 0 listed; 2 the cluster could not be read.")
    _inventory_argument(images)
    images.add_argument("--format", choices=sorted(FORMATS["images"]), default="table")
    images.add_argument("--output", help="write the list to this file instead of standard output")
    show = commands.add_parser("report", help="what changed since the previous run; --html writes a report page")
    show.add_argument("--html", metavar="FILE", help="write a self-contained HTML report to FILE")
    show.add_argument("--runs", type=int, default=50, help="how many recent runs to read (default: 50)")
    show.add_argument("--state-dir", help="where runs are recorded (default: $KUBEHARDEN_STATE_DIR, "
                                          "/var/lib/kubeharden for root, else ~/.local/state/kubeharden)")
    return parser


def _future_date(text: str) -> date:
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None
    if day <= today():
        raise argparse.ArgumentTypeError(f"{text} is not in the future")
    return day


def _inventory_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-i", "--inventory",
                        help="Ansible inventory (default: $ANSIBLE_INVENTORY, else the inventory setting of the "
                             "ansible.cfg Ansible reads)")
    _ansible_arguments(parser)  # every command that reads an inventory runs Ansible on it


def resolve_inventory(args: argparse.Namespace) -> None:
    """-i, else the inventory Ansible itself would use; a usage error when there is none."""
    if getattr(args, "inventory", "given") is None:
        args.inventory = default_inventory()
        if args.inventory is None:
            raise UsageError("no inventory: pass -i INVENTORY (or set ANSIBLE_INVENTORY, or inventory in "
                             "ansible.cfg)")


def _ansible_arguments(parser: argparse.ArgumentParser) -> None:
    """ansible-playbook's own options, passed to every playbook the command runs."""
    group = parser.add_argument_group("Ansible options (as ansible-playbook takes them)")
    group.add_argument("-e", "--extra-vars", action="append", default=[], metavar="VARS",
                       help="variables (key=value, JSON or @file); repeatable")
    group.add_argument("--vault-password-file", action="append", default=[], metavar="FILE",
                       help="vault password file (or script); repeatable")
    group.add_argument("--private-key", metavar="FILE", help="SSH private key")
    group.add_argument("-u", "--user", help="remote user")
    group.add_argument("-K", "--ask-become-pass", action="store_true", help="ask for the become password once")


def ansible_options_from(args: argparse.Namespace) -> AnsibleOptions:
    become = getpass.getpass("BECOME password: ") if getattr(args, "ask_become_pass", False) else None
    return AnsibleOptions(getattr(args, "extra_vars", []), getattr(args, "vault_password_file", []),
                          getattr(args, "private_key", None), getattr(args, "user", None), become)


def _run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--state-dir", help="where runs are recorded (default: $KUBEHARDEN_STATE_DIR, "
                                            "/var/lib/kubeharden for root, else ~/.local/state/kubeharden)")
    parser.add_argument("--textfile-dir", metavar="DIR",
                        help="also write kubeharden.prom here for node_exporter's textfile collector")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="a live status line per host on standard error (default: when it is a terminal)")


def _split(values: list[str] | None) -> list[str] | None:
    return [v.strip() for value in values for v in value.split(",") if v.strip()] if values else None


def _emit(text: str, output: str | None) -> None:
    if output:
        with open(output, "w") as handle:
            handle.write(text)
    else:
        sys.stdout.write(text)


def write_textfile(directory: str, text: str) -> None:
    """Atomically, so node_exporter never reads half a file (its textfile collector reads *.prom only)."""
    os.makedirs(directory, exist_ok=True)
    temporary = os.path.join(directory, f".kubeharden.prom.{os.getpid()}")
    with open(temporary, "w") as handle:
        handle.write(text)
    os.chmod(temporary, 0o644)
    os.replace(temporary, os.path.join(directory, "kubeharden.prom"))


def run_audit_command(args: argparse.Namespace) -> int:
    history.check_writable(history.state_dir(args.state_dir))
    result = audit_and_record(args.inventory, args.limit, _split(args.controls), _split(args.skip),
                              history.state_dir(args.state_dir), Progress("audit", enabled=args.progress))
    _emit(render("audit", args.format, result, args.verbose), args.output)
    if args.textfile_dir:
        write_textfile(args.textfile_dir, render("audit", "prometheus", result))
    return result.exit_code(args.fail_on)


def run_drift_command(args: argparse.Namespace) -> int:
    history.check_writable(history.state_dir(args.state_dir))
    result = drift.run_drift(args.inventory, args.limit, history.state_dir(args.state_dir), args.remediate,
                             args.progress)
    _emit(render("drift", args.format, result), args.output)
    if args.textfile_dir:
        write_textfile(args.textfile_dir, render("drift", "prometheus", result))
    return result.exit_code()


def run_validate_command(args: argparse.Namespace) -> int:
    inventory_waivers(check_inventory(args.inventory))
    run = run_playbook("validate.yml", args.inventory, run_id="validate", artifacts_dir=None)
    problems = run.host_errors()  # the last refusal per host names every problem (a role's own is rescued first)
    checked = sorted({e["event_data"]["host"] for e in run.events
                      if e.get("event") == "runner_on_ok" and e.get("event_data", {}).get("host")})
    for host, problem in sorted(problems.items()):
        print(f"{host}: {problem}")
    if problems:
        return EXIT_ERROR
    print(f"every role's variables are valid on {len(checked)} node(s): {', '.join(checked)}")
    return 0


def run_report_command(args: argparse.Namespace) -> int:
    records = history.load_records(history.state_dir(args.state_dir), last=args.runs)
    sys.stdout.write(history_report.to_text(records))
    if args.html:
        history_report.write_html(records, args.html)
        print(f"HTML report: {args.html}")
    return 0


class UsageError(RuntimeError):
    """A command line that cannot work, found before anything runs."""


def check_output_path(output: str | None) -> None:
    """Before the run, not after it: an audit of a fleet must not end in a traceback at the last line."""
    if not output:
        return
    directory = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(directory):
        raise UsageError(f"--output {output}: the directory {directory} does not exist")
    if os.path.isdir(output) or not os.access(directory, os.W_OK) or (
            os.path.exists(output) and not os.access(output, os.W_OK)):
        raise UsageError(f"--output {output}: not a file this user can write")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        resolve_inventory(args)
        use_ansible_options(ansible_options_from(args))
        if args.command in ("audit", "drift", "images", "waive"):
            check_output_path(args.output)
        if args.command == "lab":
            return lab_cli.run(args)
        if args.command == "audit":
            return run_audit_command(args)
        if args.command == "drift":
            return run_drift_command(args)
        if args.command == "images":
            rows = images_module.list_images(args.inventory, history.state_dir(None) / "artifacts")
            _emit(render("images", args.format, rows), args.output)
            return 0
        if args.command == "report":
            return run_report_command(args)
        if args.command == "waive":
            found = run_audit(args.inventory, args.limit, _split(args.controls), run_id="waive",
                              artifacts_dir=history.state_dir(None) / "artifacts")
            _emit(waivers.baseline(found.results, found.controls, args.owner, args.expires, today()), args.output)
            return EXIT_ERROR if found.host_errors else 0
        if args.command == "validate":
            return run_validate_command(args)
        if args.command == "collection":
            tarball = collection.build(Path(args.output).absolute(), source=collection.checkout_root(),
                                       bundled=BUNDLED)
            print(tarball)
    except (*LAB_ERRORS, AuditError, RunError, history.HistoryError, collection.CollectionError, UsageError) as error:
        print(f"kubeharden: {error}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
