"""The sandbox's AWS emulator: moto's server, with documented AWS behaviour that bakery relies on
and moto 5.2.5 lacks filled in here (in the test harness, never in bakery itself):

- CopyImage applies its TagSpecifications to the new image (AWS does; moto ignores them).
- EnableImageDeprecation / DisableImageDeprecation set the image's DeprecationTime, which
  DescribeImages then reports (moto implements neither).

Every call is appended to $BAKERY_EMULATOR_ACTIONS (when set) as a JSON line: time, service,
action and the ids it named (InstanceId.N / ImageId.N, and the values of DescribeInstances'
`instance-id` / DescribeImages' `image-id` filter), so
tests can count calls per action and see how many resources one call covered.

Systems Manager Run Command, which moto 5.2.5 only stubs (every invocation Success at once, empty
output, nothing run, DescribeInstanceInformation missing):
- DescribeInstanceInformation lists the region's instances that have an instance profile (the SSM
  agent needs a role to register): Online while running, ConnectionLost otherwise.
- SendCommand needs InstanceIds of such Online instances (no "all instances" fallback). Its
  invocation is Pending, then InProgress, then Success / Failed with the script's exit code, or
  TimedOut (ExecutionTimedOut) past executionTimeout. AWS-RunShellScript commands run for real on
  this host, as $BAKERY_EMULATOR_RUN_AS in a private directory; output is truncated like the API
  (stdout 24,000 and stderr 8,000 characters). Exit 194 means "reboot and run again": the instance
  reboots (below) and the script runs again (up to 5 times), the invocation staying InProgress. AWS-RunPowerShellScript commands are accepted and recorded (ListCommands returns
  them with their parameters) but not run, there being no PowerShell here: they end Success with
  empty output, so a probe can never pass on one.
- With OutputS3BucketName, the full stdout and stderr are also written to S3 under
  <prefix>/<command id>/<instance id>/awsrunShellScript/0.awsrunShellScript/, and the invocation's
  StandardOutputUrl / StandardErrorUrl name them (as the agent does).
- Reboots: each instance has its own boot id, seen by its commands at
  /proc/sys/kernel/random/boot_id; `reboot`, `shutdown` and `systemctl reboot` make it
  ConnectionLost for a moment and give it a new one (see "Reboots" below).
- Commands find an `aws` on their PATH that stands in for the AWS CLI of a real instance: it does
  `aws s3 cp s3://bucket/key file` against this emulator (the instance role's credentials).
- CancelCommand stops a running script (its process group); the invocation ends Cancelled.
- GetCommandInvocation answers InvocationDoesNotExist for the first 0.3 s after SendCommand (as
  AWS may) and for a plugin name the document does not have.
- A Windows Server 2022 AMI in every region, named by /aws/service/ami-windows-latest/
  Windows_Server-2022-English-Full-Base (moto seeds neither and refuses writes under /aws/).

Tests inject faults with BAKERY_EMULATOR_FAULTS="Action:region,..." (e.g. "CopyImage:eu-west-1"):
each named call into that region fails once (with an error code the SDK does not retry).

Usage: python emulator.py HOST PORT
"""

import json
import os
import sys
import threading
import time

from moto.core.exceptions import ServiceException

_FAULTS = [f.split(":", 1) for f in os.environ.get("BAKERY_EMULATOR_FAULTS", "").split(",") if ":" in f]


class InjectedFault(ServiceException):
    # Not a code the SDK retries: the fault must reach bakery.
    code = "InjectedFault"


def _fault(self, action):
    region = self.region
    for f in _FAULTS:
        if f == [action, region]:
            _FAULTS.remove(f)
            raise InjectedFault(f"fault injected by the test harness: {action} in {region}")

from moto.core.responses import ActionResult
from moto.ec2.responses.amis import AmisResponse


def _image(self):
    return self.ec2_backend.describe_images(ami_ids=[self._get_param("ImageId")])[0]


def copy_image(self):
    self.error_on_dryrun()
    _fault(self, "CopyImage")
    image = self.ec2_backend.copy_image(
        self._get_param("SourceImageId"),
        self._get_param("SourceRegion"),
        self._get_param("Name"),
        self._get_param("Description"),
    )
    for spec in self._get_param("TagSpecifications", []) or []:
        if spec.get("ResourceType") == "image":
            for tag in spec.get("Tags", []):
                image.add_tag(tag["Key"], tag["Value"])
    return ActionResult({"ImageId": image.id})


def enable_image_deprecation(self):
    self.error_on_dryrun()
    _image(self).deprecation_time = self._get_param("DeprecateAt")
    return ActionResult({"Return": True})


def disable_image_deprecation(self):
    self.error_on_dryrun()
    _image(self).deprecation_time = None
    return ActionResult({"Return": True})


_deregister = AmisResponse.deregister_image


def deregister_image(self):
    _fault(self, "DeregisterImage")
    return _deregister(self)


AmisResponse.copy_image = copy_image
AmisResponse.deregister_image = deregister_image
AmisResponse.enable_image_deprecation = enable_image_deprecation
AmisResponse.disable_image_deprecation = disable_image_deprecation

from moto.core.responses import BaseResponse

_ACTIONS_LOG = os.environ.get("BAKERY_EMULATOR_ACTIONS")
_ACTIONS_LOCK = threading.Lock()
_call_action = BaseResponse.call_action


_ID_FILTER = {"DescribeInstances": "instance-id", "DescribeImages": "image-id"}


def _named_ids(action, qs):
    """(ids named as InstanceId.N / ImageId.N, ids named in the action's own id filter)"""
    ids, filter_ids = [], []
    filters = {}
    for k, v in (qs or {}).items():
        parts = k.split(".")
        if parts[0] in ("InstanceId", "ImageId") and len(parts) == 2:
            ids.extend(v)
        elif parts[0] == "Filter" and len(parts) >= 3:
            filters.setdefault(parts[1], {}).setdefault(parts[2], []).extend(v)
    for f in filters.values():
        if (f.get("Name") or [""])[0] == _ID_FILTER.get(action):
            filter_ids.extend(f.get("Value", []))
    return ids, filter_ids


def call_action(self):
    if _ACTIONS_LOG:
        try:
            action = self._get_action()
            ids, filter_ids = _named_ids(action, self.querystring)
            entry = {
                "t": time.time(),
                "service": self.service_name,
                "action": action,
                "ids": ids,
                "filter_ids": filter_ids,
            }
            with _ACTIONS_LOCK, open(_ACTIONS_LOG, "a") as f:
                f.write(json.dumps(entry) + "\n")
        except Exception as e:  # the log must never change an answer
            print(f"action log: {e}", file=sys.stderr)
    return _call_action(self)


BaseResponse.call_action = call_action

# --- Systems Manager Run Command ------------------------------------------------------------
import hashlib
import subprocess
import tempfile
import uuid

from moto.ec2.models import ec2_backends
from moto.s3.models import s3_backends
from moto.ec2.models.amis import Ami, AmiBackend
from moto.ssm.models import Parameter, ParameterDict
from moto.ssm.responses import SimpleSystemManagerResponse

RUN_AS = os.environ.get("BAKERY_EMULATOR_RUN_AS", "")
STDOUT_LIMIT, STDERR_LIMIT = 24000, 8000
REBOOT_EXIT, MAX_REBOOTS = 194, 5
NOT_YET_VISIBLE = 0.3
WINDOWS_PARAM = "/aws/service/ami-windows-latest/Windows_Server-2022-English-Full-Base"
PORT = sys.argv[2] if len(sys.argv) > 2 else "5000"
_BIN = tempfile.mkdtemp(prefix="bakery-emulator-bin-")
os.chmod(_BIN, 0o755)
with open(os.path.join(_BIN, "aws"), "w") as f:
    # bash and curl: the build user cannot read this emulator's Python.
    f.write(f"""#!/bin/bash
# Stands in for the AWS CLI on an emulated instance: aws s3 cp s3://bucket/key FILE.
set -euo pipefail
args=()
region=us-east-1
while [ $# -gt 0 ]; do
  case "$1" in
    --only-show-errors) shift ;;
    --region) region="$2"; shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
if [ "${{#args[@]}}" -ne 4 ] || [ "${{args[0]}}" != s3 ] || [ "${{args[1]}}" != cp ] || [ "${{args[2]#s3://}}" = "${{args[2]}}" ]; then
  echo "this stand-in only does: aws s3 cp s3://bucket/key FILE" >&2; exit 2
fi
curl -fsS -o "${{args[3]}}" "http://127.0.0.1:{PORT}/${{args[2]#s3://}}" \\
  -H "Authorization: AWS4-HMAC-SHA256 Credential=instance-role/20240101/$region/s3/aws4_request, SignedHeaders=host, Signature=0"
""")
os.chmod(os.path.join(_BIN, "aws"), 0o755)

# Reboots. This host cannot reboot, so an emulated instance has its own boot id, which its
# commands see at /proc/sys/kernel/random/boot_id (bind-mounted in a private mount namespace),
# and `reboot`, `shutdown` and `systemctl reboot` on their PATH ask the emulator for a reboot: the
# instance is ConnectionLost to Systems Manager for REBOOT_SECONDS, then back with a new boot id.
# Exit 194 reboots the same way before the script runs again.
REBOOT_SECONDS = 2.0
_REQUESTS = os.path.join(_BIN, "reboot-requests")
os.makedirs(_REQUESTS)
os.chmod(_REQUESTS, 0o1777)
for _name in ("reboot", "shutdown", "systemctl"):
    with open(os.path.join(_BIN, _name), "w") as f:
        f.write(f"""#!/bin/bash
# Stands in for {_name} on an emulated instance: asks the emulator to reboot this instance.
if [ "$(basename "$0")" = systemctl ] && [ "${{1:-}}" != reboot ]; then exec /usr/bin/systemctl "$@"; fi
touch "{_REQUESTS}/$BAKERY_INSTANCE_ID"
""")
    os.chmod(os.path.join(_BIN, _name), 0o755)
_BOOT_FILES = {}  # instance id -> file holding its boot id
_DOWN_UNTIL = {}  # instance id -> when a rebooting instance is back


def _boot_file(iid):
    with _LOCK:
        if iid not in _BOOT_FILES:
            path = os.path.join(_BIN, f"boot-{iid}")
            with open(path, "w") as f:
                f.write(str(uuid.uuid4()) + "\n")
            os.chmod(path, 0o644)
            _BOOT_FILES[iid] = path
        return _BOOT_FILES[iid]


def _reboot(iid):
    path = _boot_file(iid)
    with _LOCK:
        _DOWN_UNTIL[iid] = time.time() + REBOOT_SECONDS
        with open(path, "w") as f:
            f.write(str(uuid.uuid4()) + "\n")


def _wait_up(iid):
    while time.time() < _DOWN_UNTIL.get(iid, 0):
        time.sleep(0.1)


def _watch_reboot_requests():
    while True:
        for name in os.listdir(_REQUESTS):
            try:
                os.remove(os.path.join(_REQUESTS, name))
            except FileNotFoundError:
                continue
            _reboot(name)
        time.sleep(0.1)


threading.Thread(target=_watch_reboot_requests, daemon=True).start()
_INVOCATIONS = {}  # (command id, instance id) -> invocation dict
_SENT = {}  # command id -> time sent
_LOCK = threading.Lock()


class SsmError(ServiceException):
    def __init__(self, code, message):
        super().__init__(code, message)


def windows_ami_id(region):
    return "ami-0" + hashlib.sha256(f"windows-2022-{region}".encode()).hexdigest()[:16]


_load_amis = AmiBackend._load_amis


def load_amis(self):
    _load_amis(self)
    ami_id = windows_ami_id(self.region_name)
    self.amis[ami_id] = Ami(
        self, ami_id=ami_id, name="Windows_Server-2022-English-Full-Base-2026.11.12",
        description="Microsoft Windows Server 2022 Full Locale English AMI provided by Amazon",
        owner_id="801119661308", owner_alias="amazon", public=True, virtualization_type="hvm",
        architecture="x86_64", platform="windows", root_device_type="ebs",
        root_device_name="/dev/sda1", region_name=self.region_name)


AmiBackend._load_amis = load_amis

_check_loading = ParameterDict._check_loading_status


def check_loading(self, key):
    _check_loading(self, key)
    if str(key or "").startswith("/aws/service/ami-windows-latest") and not getattr(self, "_bakery_windows", False):
        self._bakery_windows = True
        super(ParameterDict, self).__getitem__(WINDOWS_PARAM).append(Parameter(
            account_id=self.account_id, name=WINDOWS_PARAM, value=windows_ami_id(self.region_name),
            parameter_type="String", description=None, allowed_pattern=None, keyid=None,
            last_modified_date=time.time(), version=1, data_type="aws:ec2:image"))


ParameterDict._check_loading_status = check_loading


def _instances(resp):
    backend = ec2_backends[resp.current_account][resp.region]
    return [i for r in backend.all_reservations() for i in r.instances]


def _managed(resp):
    """Instances the SSM agent would have registered: launched with an instance profile."""
    backend = ec2_backends[resp.current_account][resp.region]
    return {i.id: i for i in _instances(resp) if backend.iam_instance_profile_associations.get(i.id)}


def describe_instance_information(self):
    wanted = None
    for f in (self._get_param("Filters") or []) + (self._get_param("InstanceInformationFilterList") or []):
        key = f.get("Key") or f.get("key")
        if key == "InstanceIds":
            wanted = set(f.get("Values") or f.get("valueSet") or [])
    out = []
    for iid, inst in sorted(_managed(self).items()):
        if wanted is not None and iid not in wanted:
            continue
        if inst.state == "terminated":
            continue
        windows = (inst.platform or "").lower() == "windows"
        out.append({
            "InstanceId": iid,
            "PingStatus": "Online" if inst.state == "running" and time.time() >= _DOWN_UNTIL.get(iid, 0) else "ConnectionLost",
            "LastPingDateTime": time.time(),
            "AgentVersion": "3.3.0.0",
            "IsLatestVersion": True,
            "PlatformType": "Windows" if windows else "Linux",
            "PlatformName": "Microsoft Windows Server 2022 Datacenter" if windows else "Amazon Linux",
            "ResourceType": "EC2Instance",
            "IPAddress": inst.private_ip,
        })
    return json.dumps({"InstanceInformationList": out})


def _truncate(text, limit):
    return text[:limit]


def _write_output(account, region, command, instance_id, plugin_dir, out, err):
    """What the agent does with OutputS3BucketName: the full streams, in S3."""
    bucket = command.output_s3_bucket_name
    if not bucket:
        return {}
    prefix = (command.output_s3_key_prefix or "").rstrip("/")
    urls = {}
    for name, text, field in (("stdout", out, "StandardOutputUrl"), ("stderr", err, "StandardErrorUrl")):
        if not text:
            continue
        key = f"{prefix}/{command.command_id}/{instance_id}/{plugin_dir}/0.{plugin_dir}/{name}".lstrip("/")
        s3_backends[account]["aws"].put_object(bucket, key, text.encode())
        urls[field] = f"https://s3.{region}.amazonaws.com/{bucket}/{key}"
    return urls


_PROCS = {}  # (command id, instance id) -> the running script


def _kill(p):
    try:
        os.killpg(p.pid, 9)
    except ProcessLookupError:
        pass


def _run_shell(command_id, instance_id, script, timeout, account=None, region=None, command=None):
    key = (command_id, instance_id)
    with _LOCK:
        _INVOCATIONS[key].update(Status="InProgress", StatusDetails="InProgress")
    workdir = tempfile.mkdtemp(prefix=f"ssm-{command_id[:8]}-")
    os.chmod(workdir, 0o755)
    path = os.path.join(workdir, "_script.sh")
    with open(path, "w") as f:
        f.write(script)
    os.chmod(path, 0o755)
    argv = ["env", f"PATH={_BIN}:/usr/local/bin:/usr/bin:/bin", f"BAKERY_INSTANCE_ID={instance_id}", "bash", path]
    if RUN_AS:
        subprocess.run(["chown", "-R", RUN_AS, workdir], check=False)
        argv = ["runuser", "-u", RUN_AS, "--"] + argv
    # The instance's own boot id.
    argv = ["unshare", "-m", "--propagation", "private", "sh", "-c",
            'mount --bind "$0" /proc/sys/kernel/random/boot_id && exec "$@"', _boot_file(instance_id)] + argv
    status, details, code, out, err = "Failed", "Failed", -1, "", ""
    try:
        for _ in range(MAX_REBOOTS + 1):
            _wait_up(instance_id)
            # Its own session, so CancelCommand can stop the whole process group.
            p = subprocess.Popen(argv, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 start_new_session=True)
            with _LOCK:
                _PROCS[key] = p
            try:
                o, e = p.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                _kill(p)
                o, e = p.communicate()
                status, details, code = "TimedOut", "ExecutionTimedOut", -1
                out = o.decode("utf-8", "replace")
                err = e.decode("utf-8", "replace")
                break
            finally:
                with _LOCK:
                    _PROCS.pop(key, None)
            out = o.decode("utf-8", "replace")
            err = e.decode("utf-8", "replace")
            code = p.returncode
            with _LOCK:
                cancelled = _INVOCATIONS[key]["Status"] in ("Cancelling", "Cancelled")
            if cancelled:
                status, details, code = "Cancelled", "Cancelled", -1
                break
            if code == REBOOT_EXIT:
                _reboot(instance_id)
                continue
            status, details = ("Success", "Success") if code == 0 else ("Failed", "Failed")
            break
    finally:
        subprocess.run(["rm", "-rf", workdir], check=False)
    urls = {}
    if command is not None:
        try:
            urls = _write_output(account, region, command, instance_id, "awsrunShellScript", out, err)
        except Exception as e:
            print(f"command output to S3: {e}", file=sys.stderr)
    with _LOCK:
        _INVOCATIONS[key].update(urls)
        _INVOCATIONS[key].update(
            Status=status, StatusDetails=details, ResponseCode=code,
            StandardOutputContent=_truncate(out, STDOUT_LIMIT),
            StandardErrorContent=_truncate(err, STDERR_LIMIT),
            ExecutionEndDateTime=time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()))


_send_command = SimpleSystemManagerResponse.send_command


def send_command(self):
    ids = self._get_param("InstanceIds") or []
    if not ids:
        raise SsmError("ValidationException", "bakery's emulator needs InstanceIds (no Targets)")
    managed = _managed(self)
    for i in ids:
        inst = managed.get(i)
        if inst is None or inst.state != "running":
            raise SsmError("InvalidInstanceId", f"Instances [[{i}]] not in a valid state for account")
    document = self._get_param("DocumentName")
    if document not in ("AWS-RunShellScript", "AWS-RunPowerShellScript"):
        raise SsmError("InvalidDocument", f"bakery's emulator runs AWS-RunShellScript and AWS-RunPowerShellScript, not {document}")
    params = self._get_param("Parameters") or {}
    script = "\n".join(params.get("commands") or [])
    timeout = int((params.get("executionTimeout") or ["3600"])[0])
    result = _send_command(self)
    command = self.ssm_backend._commands[-1]
    plugin = "aws:runShellScript" if document == "AWS-RunShellScript" else "aws:runPowerShellScript"
    command.status, command.status_details = "Pending", "Pending"
    for i in ids:
        inv = {
            "CommandId": command.command_id, "InstanceId": i, "Comment": command.comment,
            "DocumentName": document, "DocumentVersion": "$DEFAULT", "PluginName": plugin,
            "ResponseCode": -1, "Status": "Pending", "StatusDetails": "Pending",
            "StandardOutputContent": "", "StandardErrorContent": "",
            "StandardOutputUrl": "", "StandardErrorUrl": "",
            "ExecutionStartDateTime": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
        }
        with _LOCK:
            _INVOCATIONS[(command.command_id, i)] = inv
            _SENT[command.command_id] = time.time()
        if plugin == "aws:runShellScript":
            threading.Thread(target=_run_shell, args=(command.command_id, i, script, timeout),
                             kwargs=dict(account=self.current_account, region=self.region, command=command),
                             daemon=True).start()
        else:
            # No PowerShell here: recorded, not run.
            inv.update(Status="Success", StatusDetails="Success", ResponseCode=0)
    return result


def get_command_invocation(self):
    cid = self._get_param("CommandId")
    iid = self._get_param("InstanceId")
    plugin = self._get_param("PluginName")
    with _LOCK:
        inv = dict(_INVOCATIONS.get((cid, iid)) or {})
        sent = _SENT.get(cid, 0)
    if not inv or time.time() - sent < NOT_YET_VISIBLE or (plugin and plugin != inv["PluginName"]):
        raise SsmError("InvocationDoesNotExist", "An error occurred (InvocationDoesNotExist)")
    return json.dumps(inv)


def cancel_command(self):
    """CancelCommand: stops the script (its whole process group); the invocation ends Cancelled."""
    cid = self._get_param("CommandId")
    ids = self._get_param("InstanceIds") or []
    with _LOCK:
        keys = [k for k in _INVOCATIONS if k[0] == cid and (not ids or k[1] in ids)]
        if not keys:
            raise SsmError("InvalidCommandId", f"no command {cid}")
        for k in keys:
            inv = _INVOCATIONS[k]
            if inv["Status"] in ("Pending", "InProgress", "Delayed"):
                inv.update(Status="Cancelling", StatusDetails="Cancelling")
                p = _PROCS.get(k)
                if p is not None:
                    _kill(p)
                else:
                    inv.update(Status="Cancelled", StatusDetails="Cancelled")
    return json.dumps({})


_list_commands = SimpleSystemManagerResponse.list_commands


def list_commands(self):
    # Command-level status follows the invocations.
    with _LOCK:
        for c in self.ssm_backend._commands:
            statuses = [v["Status"] for (cid, _), v in _INVOCATIONS.items() if cid == c.command_id]
            if statuses:
                c.status = statuses[0]
                c.status_details = statuses[0]
    return _list_commands(self)


SimpleSystemManagerResponse.describe_instance_information = describe_instance_information
SimpleSystemManagerResponse.send_command = send_command
SimpleSystemManagerResponse.get_command_invocation = get_command_invocation
SimpleSystemManagerResponse.list_commands = list_commands
SimpleSystemManagerResponse.cancel_command = cancel_command

if __name__ == "__main__":
    import atexit
    import shutil

    from moto.server import main

    # moto's server exits through sys.exit on SIGTERM/SIGINT: atexit handlers run.
    atexit.register(shutil.rmtree, _BIN, True)
    # Scripts still running stop with the emulator (a test stops what it started).
    atexit.register(lambda: [_kill(p) for p in list(_PROCS.values())])

    main(["-H", sys.argv[1], "-p", sys.argv[2]])
