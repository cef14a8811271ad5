"""The sandbox's AWS emulator: moto's server, with documented AWS behaviour that bakery relies on
and moto 5.2.5 lacks filled in here (in the test harness, never in bakery itself):

- Accounts: sts:AssumeRole refuses (AccessDenied) a role that does not exist in the account
  its ARN names, whose trust policy does not name the caller's account, or whose
  sts:ExternalId condition the call does not meet; moto lets any ARN be assumed. The exception
  is OrganizationAccountAccessRole, which AWS Organizations creates in member accounts and the
  harness uses to set consumer accounts up. An AMI shared by launch permission is visible to
  (DescribeImages by id, by filter, ExecutableUsers=self) and launchable by (RunInstances) the
  account it is shared with, as in AWS; moto keeps every AMI to its owner.
- CreateImage applies TagSpecifications of ResourceType "snapshot" to every snapshot of the new
  image, as well as those of ResourceType "image" to the image (AWS documents both; moto
  answers 500 for "snapshot").
- CopyImage applies its TagSpecifications to the new image ("image") and to each of its new
  snapshots ("snapshot"); any other ResourceType is refused (InvalidParameterValue), as AWS does.
  moto ignores them all.
- CopyImage is idempotent on ClientToken, per account and destination region: a repeat with the
  same token returns the first call's ImageId and creates nothing; a repeat whose other
  parameters differ fails with IdempotentParameterMismatch (moto ignores the token, so a retried
  CopyImage made a second image).
- EnableImageDeprecation / DisableImageDeprecation set the image's DeprecationTime, which
  DescribeImages then reports (moto implements neither).

Every call is appended to $BAKERY_EMULATOR_ACTIONS (when set) as a JSON line once answered:
when it arrived (`t`) and when it was answered (`done`), service, action, the account and region it was made in (`account`, `region`; the account
is the assumed role's for a consumer's call), and the ids it named (InstanceId.N / ImageId.N, and the values of DescribeInstances'
`instance-id` / DescribeImages' `image-id` filter and of DescribeInstanceInformation's
`InstanceIds` filter), so
tests can count calls per action and see how many resources one call covered. S3 calls are logged
too (service "s3", the action as moto names it for IAM: GetObject, PutObject, ListBucket, ...;
no ids). A call that got an injected fault (below) has one line all the same, with an extra field
"fault": the fault's code (InjectedFault, LostResponse, RequestLimitExceeded, ...); other lines
have no "fault" field.

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
  ConnectionLost for a moment and give it a new one (see "Reboots" below). The same holds over
  the sandbox's SSH: a key logs in with command=". ssh-session <instance>", which gives the
  session the instance's boot id (its mentions of the path point at the instance's file) and the
  reboot stand-ins, so a restart step or exit 194 over SSH sees a new boot.
- Commands find an `aws` on their PATH that stands in for the AWS CLI of a real instance: it does
  `aws s3 cp s3://bucket/key file` against this emulator (the instance role's credentials).
- CancelCommand stops a running script (its process group); the invocation ends Cancelled.
- GetCommandInvocation answers InvocationDoesNotExist for the first 0.3 s after SendCommand (as
  AWS may) and for a plugin name the document does not have.
- GetEbsDefaultKmsKeyId (moto has only ModifyEbsDefaultKmsKeyId): "alias/aws/ebs" while the
  default is the AWS managed key, as AWS answers, else the key's ARN.
- ModifyImageAttribute ImdsSupport=v2.0 (moto ignores it): the AMI's ImdsSupport, in
  DescribeImages; any other value is InvalidParameterValue.
- CreateImage's block device mapping has the size of the instance's root volume, and a copy
  its source's (moto says 15 GiB for every image).
- A Windows Server 2022 AMI in every region, named by /aws/service/ami-windows-latest/
  Windows_Server-2022-English-Full-Base (moto seeds neither and refuses writes under /aws/).
- EC2 Fast Launch (moto has none of it): EnableFastLaunch (Windows AMIs that are available;
  MaxParallelLaunches at least 6; a launch template by id or name, with a version, that exists),
  DisableFastLaunch and DescribeFastLaunchImages (ImageIds; filters state, resource-type,
  owner-id). Enabling answers "enabling" and becomes "enabled"; disabling answers "disabling" and
  the image is then no longer listed (both after `fast_launch` of BAKERY_EMULATOR_DELAYS, at once
  when unset). Deregistering an AMI does not disable it (AWS does not document that it does), so
  a test sees an AMI deregistered with Fast Launch still on.
- Root on an instance (an instance is this host, which must never change): an SSH login as root
  runs in the instance's own copy-on-write root filesystem, which an AMI made from it carries to
  the instances launched from it; their first root login is their boot (enabled units start, user
  data runs). systemctl's manager verbs have a stand-in, systemd not running. See "Root instances".

State delays (AWS's transitions take time; moto makes them at once), for benchmarks:
- BAKERY_EMULATOR_DELAYS="running=2,stopped=2,available=3,online=2" (seconds; any subset):
  RunInstances leaves its instances "pending" for `running` seconds; StopInstances leaves the
  instance "stopping" for `stopped` seconds; CreateImage and CopyImage leave the new image
  "pending" for `available` seconds; Systems Manager lists an instance Online `online` seconds
  after it became running. Unset: every transition is immediate, as moto makes it.
- Every modelled transition is appended to $BAKERY_EMULATOR_TRANSITIONS (when set) as a JSON
  line: time, the resource's id, its region and the state it entered (`running`, `stopped`,
  `available`, `Online`), so a benchmark can tell how long after a change a client noticed it.

For the sandbox's sshd (the way EC2 puts a key pair on an instance): with
BAKERY_EMULATOR_KEYS_PORT_FILE set, a side HTTP server on 127.0.0.1 (its port written to that
file) answers GET /authorized-keys?region=R&key=BASE64 with the key if a running instance of that
region has it as its key pair (see "Authorized keys" below).

Fault injection (the failures real AWS has and moto never does):
- BAKERY_EMULATOR_FAULTS="Action:region[:Code],..." (e.g. "CopyImage:eu-west-1,
  DeleteSnapshot:us-east-1:InvalidSnapshot.InUse"): the first call of that action into that
  region fails, once per entry (an entry listed twice fails two calls), before it is carried out.
  Any action (EC2, SSM, IAM, ...; S3 by its IAM action name); DryRun calls are let through.
  Code defaults to InjectedFault, which the SDK does not retry, so the fault reaches bakery.
  Status 400, but 503 for RequestLimitExceeded / SlowDown / Unavailable / ServiceUnavailable and
  500 for InternalError / InternalServerError, as AWS answers those.
- Code LostResponse (e.g. "CopyImage:eu-west-1:LostResponse"): the call IS carried out (the
  copy is made, its ClientToken recorded) but the answer is lost: the client gets HTTP 500
  InternalError (InternalServerError from SSM), which the SDK retries.
- BAKERY_EMULATOR_FAULT_RATE=0.2 (with BAKERY_EMULATOR_FAULT_SEED=<int> for a reproducible
  sequence: one draw per request subject to it): each EC2, SSM and S3 request fails with that
  probability before it is handled, half as throttling (EC2 RequestLimitExceeded, HTTP 503; SSM
  ThrottlingException, 400; S3 SlowDown, 503), half as a server error (EC2 InternalError, 500;
  SSM InternalServerError, 500; S3 InternalError, 500): all of them what the SDK's standard
  retry retries.
- BAKERY_EMULATOR_SLOW="Action:seconds,..." (e.g. "ImportKeyPair:0.3"): every call of that
  action waits that long before it is carried out (AWS's answers take time; moto's come at once),
  so a test can tell calls that overlap from calls made one after the other.
- BAKERY_EMULATOR_RACE="name=value[@n],..." (e.g. "/bakery/demo/channel-versions/candidate=0.2.0@2"):
  right after the n-th (default: first) GetParameters from an SDK that names `name` is answered,
  `name` is set to `value` (a String, overwriting: its next version), once per entry: another
  runner's write landing between a read and the write decided on it, which no timing can place
  there reliably. A value `from:<parameter>` is that parameter's value when it fires (an AMI the
  test made after the emulator started).
Error bodies are each protocol's own (EC2 <Response><Errors><Error><Code>; SSM JSON with __type
and an X-Amzn-ErrorType header; S3 <Error><Code>, none for HEAD). Faults of either kind only hit
requests from an AWS SDK or CLI (by User-Agent): never the harness's own curl / urllib requests
(sandbox-host's setup, sshd's AuthorizedKeysCommand), nor the instances' `aws` stand-in
(instance-role credentials), none of which retries.

Usage: python emulator.py HOST PORT
"""

import json
import os
import random
import sys
import threading
import time
import uuid

from moto.core.exceptions import ServiceException
from moto.core.responses import ActionResult, BaseResponse
from moto.ec2.exceptions import InvalidTaggableResourceType
from moto.ec2.models.amis import AmiBackend
from moto.ec2.responses.amis import AmisResponse

# --- Faults ----------------------------------------------------------------------------------
# [action, region, code] entries, each removed when it fires.
_FAULTS = [[p.strip() for p in f.split(":", 2)] for f in os.environ.get("BAKERY_EMULATOR_FAULTS", "").split(",")
           if ":" in f]
_FAULTS = [f if len(f) == 3 and f[2] else f[:2] + ["InjectedFault"] for f in _FAULTS]
_FAULT_RATE = float(os.environ.get("BAKERY_EMULATOR_FAULT_RATE") or 0)
_SEED = os.environ.get("BAKERY_EMULATOR_FAULT_SEED")
_RNG = random.Random(int(_SEED)) if _SEED not in (None, "") else random.Random()
_FAULT_LOCK = threading.Lock()
LOST_RESPONSE = "LostResponse"
_STATUS = {"RequestLimitExceeded": 503, "SlowDown": 503, "Unavailable": 503,
           "ServiceUnavailable": 503, "InternalError": 500, "InternalServerError": 500,
           "AccessDenied": 403, "NoSuchKey": 404, "NoSuchBucket": 404}
# What each service answers when throttling / failing inside: (code, HTTP status, message).
_THROTTLE = {"ec2": ("RequestLimitExceeded", 503, "Request limit exceeded."),
             "ssm": ("ThrottlingException", 400, "Rate exceeded"),
             "s3": ("SlowDown", 503, "Please reduce your request rate.")}
_INTERNAL = {"ec2": ("InternalError", 500, "An internal error has occurred."),
             "ssm": ("InternalServerError", 500, "An error occurred on the server side."),
             "s3": ("InternalError", 500, "We encountered an internal error. Please try again.")}
_SDK_AGENTS = ("aws-sdk-", "boto3/", "botocore/", "aws-cli/")


class EmulatorError(ServiceException):
    # Defined here, not in moto: moto looks an exception's code up in the model of the service
    # its module is named after.
    def __init__(self, code, message):
        super().__init__(code, message)


def _from_sdk(headers):
    """Requests an AWS SDK or CLI made (they retry), not the harness's curl / urllib nor an
    instance's `aws` stand-in (instance-role credentials)."""
    if "Credential=instance-role/" in (headers.get("Authorization") or ""):
        return False
    agents = ((headers.get("User-Agent") or "") + " " + (headers.get("X-Amz-User-Agent") or "")).lower()
    return any(a in agents for a in _SDK_AGENTS)


def _pick_fault(service, action, region, headers, dry_run=False):
    """The fault this request gets, if any: (code, HTTP status, message)."""
    if not _from_sdk(headers):
        return None
    with _FAULT_LOCK:
        if not dry_run:
            for f in _FAULTS:
                if f[0] == action and f[1] == region:
                    _FAULTS.remove(f)
                    code = f[2]
                    if code == LOST_RESPONSE:
                        return (code,) + _INTERNAL.get(service, _INTERNAL["ec2"])[1:]
                    msg = f"fault injected by the test harness: {action} in {region}"
                    return code, _STATUS.get(code, 400), msg
        if _FAULT_RATE > 0 and service in _THROTTLE:
            u = _RNG.random()
            if u < _FAULT_RATE:
                return (_THROTTLE if u < _FAULT_RATE / 2 else _INTERNAL)[service]
    return None


# --- AMIs ------------------------------------------------------------------------------------
def _image(self):
    return self.ec2_backend.describe_images(ami_ids=[self._get_param("ImageId")])[0]


def _snapshots(ami):
    """The snapshots of an image's block device mappings."""
    backend = ami.ec2_backend
    out = []
    for m in ami.block_device_mappings:
        sid = (m.get("Ebs") or {}).get("SnapshotId")
        if sid and sid in backend.snapshots:
            out.append(backend.snapshots[sid])
    return out


def _spec_tags(specs, resource_type):
    return [t for s in specs or [] if s.get("ResourceType") == resource_type for t in s.get("Tags") or []]


_create_image = AmiBackend.create_image


def create_image(self, instance_id, name, description, tag_specifications):
    # moto tags the image itself and raises NotImplementedError for "snapshot": tag those here.
    specs = tag_specifications or []
    ami = _create_image(self, instance_id, name, description,
                        [s for s in specs if s.get("ResourceType") != "snapshot"])
    # The snapshot holds the instance's root volume, so the image's mapping has its size.
    try:
        instance = self.get_instance(instance_id)
        root = next((b for d, b in instance.get_block_device_mapping
                     if d == instance.root_device_name), None)
        root = root or next((b for _, b in instance.get_block_device_mapping), None)
        if root is not None:
            ami.bakery_volume_size = self.get_volume(root.volume_id).size
    except Exception as e:  # the size is a detail; never fail CreateImage over it
        print(f"create_image volume size: {e}", file=sys.stderr)
    for snap in _snapshots(ami):
        for tag in _spec_tags(specs, "snapshot"):
            snap.add_tag(tag["Key"], tag["Value"])
    _image_layer(self, instance_id, ami)
    _pending_image(ami)
    return ami


AmiBackend.create_image = create_image


def _block_device_mappings(self):
    # moto says 15 GiB for every image; an image bakery made has its instance's root size.
    return [{
        "DeviceName": self.root_device_name,
        "Ebs": {
            "SnapshotId": self.ebs_snapshot.id,
            "VolumeSize": getattr(self, "bakery_volume_size", 15),
            "DeleteOnTermination": False,
            "VolumeType": "standard",
        },
    }]


from moto.ec2.models.amis import Ami as _Ami

_Ami.block_device_mappings = property(_block_device_mappings)

_COPIES = {}  # (account, region, client token) -> (image id, the call's other parameters)
_COPY_LOCK = threading.Lock()
_NOT_PARAMETERS = {"Action", "Version", "ClientToken", "DryRun"}


def copy_image(self):
    self.error_on_dryrun()
    specs = self._get_param("TagSpecifications", []) or []
    for spec in specs:
        if spec.get("ResourceType") not in ("image", "snapshot"):
            raise InvalidTaggableResourceType(spec.get("ResourceType"))
    token = self._get_param("ClientToken")
    params = sorted((k, v) for k, v in (self.querystring or {}).items() if k not in _NOT_PARAMETERS)
    key = (self.current_account, self.region, token)
    with _COPY_LOCK:
        if token and key in _COPIES:
            image_id, first = _COPIES[key]
            if first != params:
                raise EmulatorError(
                    "IdempotentParameterMismatch",
                    "Arguments on this idempotent request are inconsistent with arguments used in previous request(s).")
            return ActionResult({"ImageId": image_id})
        image = self.ec2_backend.copy_image(
            self._get_param("SourceImageId"),
            self._get_param("SourceRegion"),
            self._get_param("Name"),
            self._get_param("Description"),
        )
        try:
            from moto.ec2.models import ec2_backends as _backends
            source = _backends[self.current_account][self._get_param("SourceRegion")].amis.get(
                self._get_param("SourceImageId"))
            if source is not None and hasattr(source, "bakery_volume_size"):
                image.bakery_volume_size = source.bakery_volume_size
            if source is not None and hasattr(source, "bakery_layer"):
                image.bakery_layer = source.bakery_layer
        except Exception as e:
            print(f"copy_image volume size: {e}", file=sys.stderr)
        for tag in _spec_tags(specs, "image"):
            image.add_tag(tag["Key"], tag["Value"])
        for snap in _snapshots(image):
            for tag in _spec_tags(specs, "snapshot"):
                snap.add_tag(tag["Key"], tag["Value"])
        if token:
            _COPIES[key] = (image.id, params)
    _pending_image(image)
    return ActionResult({"ImageId": image.id})


def enable_image_deprecation(self):
    self.error_on_dryrun()
    _image(self).deprecation_time = self._get_param("DeprecateAt")
    return ActionResult({"Return": True})


def disable_image_deprecation(self):
    self.error_on_dryrun()
    _image(self).deprecation_time = None
    return ActionResult({"Return": True})


_modify_image_attribute = AmisResponse.modify_image_attribute


def modify_image_attribute(self):
    # moto ignores ImdsSupport. AWS: the only value is v2.0, and once set it cannot be undone.
    imds = (self._get_param("ImdsSupport") or {}).get("Value")
    if imds is None:
        return _modify_image_attribute(self)
    self.error_on_dryrun()
    if imds != "v2.0":
        raise EmulatorError("InvalidParameterValue", f"Value ({imds}) for parameter ImdsSupport is invalid.")
    _image(self).imds_support = "v2.0"
    return ActionResult({})


AmisResponse.modify_image_attribute = modify_image_attribute

# GetEbsDefaultKmsKeyId, which moto lacks (it has ModifyEbsDefaultKmsKeyId, which needs a key
# in its KMS): as AWS answers it, "alias/aws/ebs" while the default is the AWS managed key.
from moto.ec2.responses.settings import Settings


def get_ebs_default_kms_key_id(self):
    self.error_on_dryrun()
    key = self.ec2_backend.default_kms_key_id
    if key:
        from moto.kms import kms_backends

        kms = kms_backends[self.current_account][self.region]
        if kms.alias_exists("alias/aws/ebs") and kms.describe_key("alias/aws/ebs").arn == key:
            key = ""
    return ActionResult({"KmsKeyId": key or "alias/aws/ebs"})


Settings.get_ebs_default_kms_key_id = get_ebs_default_kms_key_id
AmisResponse.copy_image = copy_image
AmisResponse.enable_image_deprecation = enable_image_deprecation
AmisResponse.disable_image_deprecation = disable_image_deprecation

# --- State delays ----------------------------------------------------------------------------
from moto.ec2.models.instances import Instance, InstanceBackend

_DELAYS = {}
for _part in os.environ.get("BAKERY_EMULATOR_DELAYS", "").split(","):
    if "=" in _part:
        _k, _v = _part.split("=", 1)
        _DELAYS[_k.strip()] = float(_v)
_TRANSITIONS_LOG = os.environ.get("BAKERY_EMULATOR_TRANSITIONS")
_TRANSITIONS_LOCK = threading.Lock()
_ONLINE_AT = {}  # instance id -> when Systems Manager lists it Online


def _transition(resource_id, state, region):
    if not _TRANSITIONS_LOG:
        return
    try:
        line = {"t": time.time(), "id": resource_id, "state": state, "region": region}
        with _TRANSITIONS_LOCK, open(_TRANSITIONS_LOG, "a") as f:
            f.write(json.dumps(line) + "\n")
    except Exception as e:  # the log must never change an answer
        print(f"transition log: {e}", file=sys.stderr)


def _later(seconds, fn):
    t = threading.Timer(seconds, fn)
    t.daemon = True
    t.start()


def _now_running(instance):
    d = _DELAYS.get("online", 0.0)
    _ONLINE_AT[instance.id] = time.time() + d
    region = instance.region_name
    _transition(instance.id, "running", region)
    if d > 0:
        _later(d, lambda: _transition(instance.id, "Online", region))
    else:
        _transition(instance.id, "Online", region)


_run_instances = InstanceBackend.run_instances


def run_instances(self, *args, **kwargs):
    reservation = _run_instances(self, *args, **kwargs)
    d = _DELAYS.get("running", 0.0)
    for inst in reservation.instances:
        if d <= 0:
            _now_running(inst)
            continue
        inst._state.name, inst._state.code = "pending", 0

        def up(inst=inst):
            if inst._state.name == "pending":
                inst._state.name, inst._state.code = "running", 16
                _now_running(inst)
        _later(d, up)
    return reservation


InstanceBackend.run_instances = run_instances
_stop = Instance.stop


def stop(self):
    previous = _stop(self)
    d = _DELAYS.get("stopped", 0.0)
    if d <= 0:
        _transition(self.id, "stopped", self.region_name)
        return previous
    self._state.name, self._state.code = "stopping", 64

    def down():
        if self._state.name == "stopping":
            self._state.name, self._state.code = "stopped", 80
            _transition(self.id, "stopped", self.region_name)
    _later(d, down)
    return previous


Instance.stop = stop


def _pending_image(ami):
    d = _DELAYS.get("available", 0.0)
    region = ami.ec2_backend.region_name
    if d <= 0:
        _transition(ami.id, "available", region)
        return
    ami.state = "pending"

    def ready():
        if ami.state == "pending":
            ami.state = "available"
            _transition(ami.id, "available", region)
    _later(d, ready)


# --- EC2 Fast Launch (moto 5.2.5 has none of its actions) ---------------------------------------
from datetime import datetime, timezone

_FAST = {}  # (account, region, image id) -> the DescribeFastLaunchImages item
_FAST_LOCK = threading.Lock()


def _fast_error(code, message):
    return EmulatorError(code, message)


def enable_fast_launch(self):
    """EnableFastLaunch: Windows AMIs only, MaxParallelLaunches 6 or more (AWS's minimum), a
    launch template (optional) by id or name with a version; the image is "enabling", then
    "enabled" after BAKERY_EMULATOR_DELAYS' `fast_launch` seconds (at once when unset). AWS does
    not document the error codes of a Linux or unavailable AMI: InvalidParameter and
    IncorrectState stand in."""
    self.error_on_dryrun()
    ami = _image(self)
    if (ami.platform or "").lower() != "windows":
        raise _fast_error("InvalidParameter", f"{ami.id} is not a Windows AMI: Fast Launch is for Windows AMIs only.")
    if ami.state != "available":
        raise _fast_error("IncorrectState", f"{ami.id} is {ami.state}, not available.")
    resource_type = self._get_param("ResourceType") or "snapshot"
    if resource_type != "snapshot":
        raise _fast_error("InvalidParameterValue", f"Value ({resource_type}) for parameter ResourceType is invalid.")
    parallel = int(self._get_param("MaxParallelLaunches") or 6)
    if parallel < 6:
        raise _fast_error("InvalidParameterValue", f"MaxParallelLaunches must be at least 6, not {parallel}.")
    target = int(((self._get_param("SnapshotConfiguration") or {}).get("TargetResourceCount")) or 5)
    if target < 1:
        raise _fast_error("InvalidParameterValue", f"TargetResourceCount must be at least 1, not {target}.")
    template = self._get_param("LaunchTemplate") or {}
    if template:
        tid, tname, version = template.get("LaunchTemplateId"), template.get("LaunchTemplateName"), template.get("Version")
        if bool(tid) == bool(tname) or not version:
            raise _fast_error("InvalidParameterCombination",
                              "LaunchTemplate needs a Version and exactly one of LaunchTemplateId, LaunchTemplateName.")
        try:
            lt = self.ec2_backend.get_launch_template(tid) if tid else self.ec2_backend.get_launch_template_by_name(tname)
        except Exception:
            raise _fast_error("InvalidLaunchTemplateId.NotFound", f"The launch template {tid or tname} does not exist.")
        template = {"LaunchTemplateId": lt.id, "LaunchTemplateName": lt.name, "Version": str(version)}
    key = (self.current_account, self.region, ami.id)
    item = {
        "ImageId": ami.id,
        "ResourceType": "snapshot",
        "SnapshotConfiguration": {"TargetResourceCount": target},
        "LaunchTemplate": template,
        "MaxParallelLaunches": parallel,
        "OwnerId": ami.owner_id,
        "State": "enabling",
        "StateTransitionReason": "Client.UserInitiated",
        "StateTransitionTime": datetime.now(timezone.utc),
    }
    region = self.region
    with _FAST_LOCK:
        was = _FAST.get(key)
        if was and was["State"] == "enabled":
            item["State"] = "enabled"  # new settings for an image already enabled
        _FAST[key] = item

    def enabled():
        with _FAST_LOCK:
            cur = _FAST.get(key)
            if cur is item and cur["State"] == "enabling":
                cur["State"] = "enabled"
                cur["StateTransitionTime"] = datetime.now(timezone.utc)
        _transition(ami.id, "fast-launch-enabled", region)
    _later(_DELAYS.get("fast_launch", 0.0), enabled)
    return ActionResult(dict(item))


def disable_fast_launch(self):
    """DisableFastLaunch: "disabling", then the image is no longer listed (its pre-provisioned
    snapshots cleaned up) after `fast_launch` seconds."""
    self.error_on_dryrun()
    ami = _image(self)
    key = (self.current_account, self.region, ami.id)
    region = self.region
    with _FAST_LOCK:
        item = _FAST.get(key)
        if item is None:
            raise _fast_error("InvalidParameter", f"Fast Launch is not enabled for {ami.id}.")
        item["State"] = "disabling"
        item["StateTransitionReason"] = "Client.UserInitiated"
        item["StateTransitionTime"] = datetime.now(timezone.utc)
        answer = dict(item)

    def gone():
        with _FAST_LOCK:
            if _FAST.get(key) is item and item["State"] == "disabling":
                del _FAST[key]
        _transition(ami.id, "fast-launch-disabled", region)
    _later(_DELAYS.get("fast_launch", 0.0), gone)
    return ActionResult(answer)


def describe_fast_launch_images(self):
    self.error_on_dryrun()
    ids = self._get_param("ImageIds") or []
    filters = {f.get("Name"): f.get("Values") or [] for f in (self._get_param("Filters") or [])}
    out = []
    with _FAST_LOCK:
        for (account, region, image_id), item in sorted(_FAST.items()):
            if account != self.current_account or region != self.region:
                continue
            if ids and image_id not in ids:
                continue
            if "state" in filters and item["State"] not in filters["state"]:
                continue
            if "resource-type" in filters and item["ResourceType"] not in filters["resource-type"]:
                continue
            if "owner-id" in filters and item["OwnerId"] not in filters["owner-id"]:
                continue
            out.append(dict(item))
    return ActionResult({"FastLaunchImages": out})


AmisResponse.enable_fast_launch = enable_fast_launch
AmisResponse.disable_fast_launch = disable_fast_launch
AmisResponse.describe_fast_launch_images = describe_fast_launch_images


# --- The action log, and faults for every service moto answers through call_action ----------
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


def _log(service, action, ids=(), filter_ids=(), fault=None, t=None, done=None, where=None):
    """One line per call: `t` when it arrived, `done` when it was answered (a Describe that
    arrived just before a modelled transition may still have seen the new state)."""
    if not _ACTIONS_LOG:
        return
    try:
        t = time.time() if t is None else t
        entry = {
            "t": t,
            "done": t if done is None else done,
            "service": service,
            "action": action,
            "ids": list(ids),
            "filter_ids": list(filter_ids),
        }
        if fault:
            entry["fault"] = fault
        if where:
            entry["account"], entry["region"] = where
        with _ACTIONS_LOCK, open(_ACTIONS_LOG, "a") as f:
            f.write(json.dumps(entry) + "\n")
    except Exception as e:  # the log must never change an answer
        print(f"action log: {e}", file=sys.stderr)


def _dry_run(self):
    return str((self.querystring or {}).get("DryRun", [""])[0]).lower() == "true" or \
        str(self._get_param("DryRun") or "").lower() == "true"


def _error_response(self, code, status, message):
    """The error as this service's protocol puts it (moto's serializer), with AWS's status."""
    _, headers, body = self.serialized(ActionResult(EmulatorError(code, message)))
    headers = dict(headers)
    headers.pop("status", None)
    headers, body = self._enrich_response(headers, body)
    if isinstance(body, str):  # moto leaves EC2's RequestID a placeholder
        body = body.replace("<RequestID>request-id</RequestID>", f"<RequestID>{uuid.uuid4()}</RequestID>")
    return status, headers, body


def _slow_actions():
    out = {}
    for entry in filter(None, (e.strip() for e in os.environ.get("BAKERY_EMULATOR_SLOW", "").split(","))):
        action, _, seconds = entry.partition(":")
        out[action] = float(seconds)
    return out


_SLOW = _slow_actions()

def _races():
    out = []
    for entry in filter(None, (e.strip() for e in os.environ.get("BAKERY_EMULATOR_RACE", "").split(","))):
        name, _, value = entry.partition("=")
        value, _, nth = value.partition("@")
        out.append([name, value, int(nth or 1)])
    return out


# [name, value, reads left until it fires] entries of BAKERY_EMULATOR_RACE, removed once fired.
_RACES = _races()
_RACE_LOCK = threading.Lock()


def _race_after(self, action):
    """BAKERY_EMULATOR_RACE: another runner's write right after a read that names it."""
    if action != "GetParameters" or not _RACES or not _from_sdk(self.headers or {}):
        return
    names = self._get_param("Names") or []
    due = []
    with _RACE_LOCK:
        for r in [r for r in _RACES if r[0] in names]:
            r[2] -= 1
            if r[2] <= 0:
                _RACES.remove(r)
                due.append(r)
    if not due:
        return
    from moto.ssm.models import ssm_backends
    backend = ssm_backends[self.current_account][self.region]
    for name, value, _ in due:
        if value.startswith("from:"):
            value = backend.get_parameter(value[len("from:"):]).value
        backend.put_parameter(name=name, description=None, value=value, parameter_type="String",
                              allowed_pattern=None, keyid=None, overwrite=True, tags=None,
                              data_type="text", tier=None, policies=None)


def call_action(self):
    arrived = time.time()
    action = self._get_action()
    if action in _SLOW:
        time.sleep(_SLOW[action])
    fault = None
    try:
        fault = _pick_fault(self.service_name, action, self.region, self.headers or {}, _dry_run(self))
    except Exception as e:  # fault injection must never break an answer by accident
        print(f"fault injection: {e}", file=sys.stderr)
    if _ACTIONS_LOG:
        try:
            ids, filter_ids = _named_ids(action, self.querystring)
            if action == "DescribeInstanceInformation":
                filter_ids = sorted(_node_filter(self) or [])
        except Exception as e:
            print(f"action log: {e}", file=sys.stderr)
            ids, filter_ids = [], []
        where = None
        try:
            where = (self.current_account, self.region)
        except Exception:
            pass
        if fault is not None:
            _log(self.service_name, action, ids, filter_ids, fault[0], t=arrived, where=where)
    if fault is None:
        try:
            answer = _call_action(self)
            try:
                _race_after(self, action)
            except Exception as e:  # the hook must never break an answer by accident
                print(f"race hook: {e}", file=sys.stderr)
            return answer
        finally:
            if _ACTIONS_LOG:
                _log(self.service_name, action, ids, filter_ids, t=arrived, done=time.time(), where=where)
    code, status, message = fault
    if code == LOST_RESPONSE:
        try:
            _call_action(self)  # carried out; its answer is lost
        except Exception as e:
            print(f"lost response: {action}: {e!r}", file=sys.stderr)
        code = _INTERNAL.get(self.service_name, _INTERNAL["ec2"])[0]
    return _error_response(self, code, status, message)


BaseResponse.call_action = call_action

# --- S3 (moto answers it without call_action) ------------------------------------------------
from urllib.parse import urlparse
from xml.sax.saxutils import escape

from moto.s3.responses import ACTION_MAP as _S3_ACTIONS, S3Response


def _s3_action(self, request, full_url, kind):
    """The action as moto names S3 requests (for IAM): GetObject, PutObject, ListBucket, ..."""
    if kind == "BUCKET" and not urlparse(full_url).path.strip("/") and not self.subdomain_based_buckets(request):
        return "ListAllMyBuckets"
    by_query = _S3_ACTIONS.get(kind, {}).get(request.method, {})
    action = by_query.get("DEFAULT", request.method)
    for q, a in by_query.items():
        if q != "DEFAULT" and q in request.args:
            action = a
    return action


def _s3_error(code, status, message):
    request_id = uuid.uuid4().hex[:16].upper()
    body = ('<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{escape(code)}</Code><Message>{escape(message)}</Message>"
            f"<RequestId>{request_id}</RequestId><HostId>{request_id}</HostId></Error>")
    return status, {"Content-Type": "application/xml", "x-amz-request-id": request_id}, body.encode()


def _s3_faulty(kind, respond):
    def handler(self, request, full_url, headers):
        action, fault = kind, None
        try:
            action = _s3_action(self, request, full_url, kind)
            region = BaseResponse.get_region_from_url(self, request, full_url)
            fault = _pick_fault("s3", action, region, request.headers)
        except Exception as e:
            print(f"fault injection: {e}", file=sys.stderr)
        _log("s3", action, fault=fault and fault[0])
        if fault is None:
            return respond(self, request, full_url, headers)
        code, status, message = fault
        if code == LOST_RESPONSE:
            try:
                respond(self, request, full_url, headers)  # carried out; its answer is lost
            except Exception as e:
                print(f"lost response: {action}: {e!r}", file=sys.stderr)
            code = _INTERNAL["s3"][0]
        return _s3_error(code, status, message)
    return handler


S3Response.bucket_response = _s3_faulty("BUCKET", S3Response.bucket_response)
S3Response.key_response = _s3_faulty("KEY", S3Response.key_response)

# --- Systems Manager Run Command ------------------------------------------------------------
import base64
import collections
import hashlib
import shutil
import signal
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
# Outside /tmp where the sandbox puts it (BAKERY_EMULATOR_HOME): an instance's root filesystem
# has a /tmp of its own, which a cleanup step may empty, while this directory is shared with it.
_BIN = tempfile.mkdtemp(prefix="bakery-emulator-bin-", dir=os.environ.get("BAKERY_EMULATOR_HOME") or None)
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
if [ "$(basename "$0")" = systemctl ] && [ "${{1:-}}" != reboot ]; then
  # No systemd runs here (nor on this host): its manager's verbs are the stand-in's.
  [ -d /run/systemd/system ] || exec "{_BIN}/systemd-manager" "$@"
  exec /usr/bin/systemctl "$@"
fi
touch "{_REQUESTS}/$BAKERY_INSTANCE_ID"
""")
    os.chmod(os.path.join(_BIN, _name), 0o755)
# systemd's manager, where none runs (this host, and so every emulated instance): systemctl's
# manager verbs (daemon-reload, start, stop, restart, is-active, show of LoadState, ActiveState and
# UnitFileState) read the unit files at systemd's paths, and a started unit is its ExecStart run as
# its User, recorded under /run/bakery-units. The unit-file verbs (enable, disable, is-enabled, ...)
# are the real systemctl's, which works on the files without a manager. Not modelled: unit
# dependencies, Type=, EnvironmentFile=, restarts, and starting enabled units at a reboot.
with open(os.path.join(_BIN, "systemd-manager"), "w") as f:
    f.write(r"""#!/bin/bash
set -u
orig=("$@") quiet=false value=false now=false prop="" args=()
while [ $# -gt 0 ]; do
  case "$1" in
    -q|--quiet) quiet=true ;;
    --value) value=true ;;
    --now) now=true ;;
    -p|--property|-P) [ "$1" = -P ] && value=true; prop=${2:-}; [ $# -gt 1 ] && shift ;;
    --property=*) prop=${1#*=} ;;
    -p*) prop=${1#-p} ;;
    # Options with a value of their own (not a unit).
    -t|--type|--state|--job-mode|-H|--host|-M|--machine|--root|-n|--lines|-o|--output|-s|--signal|--kill-whom)
      [ $# -gt 1 ] && shift ;;
    -*) ;;
    *) args+=("$1") ;;
  esac
  shift
done
verb=${args[0]:-} units=("${args[@]:1}") state=/run/bakery-units
name() { case "$1" in *.*) echo "$1" ;; *) echo "$1.service" ;; esac; }
unit_file() {
  local d
  for d in /etc/systemd/system /run/systemd/system /usr/lib/systemd/system /lib/systemd/system; do
    [ -f "$d/$(name "$1")" ] && { echo "$d/$(name "$1")"; return 0; }
  done
  return 1
}
running() { local f; f="$state/$(name "$1").pid"; [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null; }
directive() { sed -n "s/^$1=//p" "$2" | tail -n 1; }
stop() {
  local pid
  if running "$1"; then
    # Its process group (setsid at start): TERM, then KILL after 10 s, as systemd would.
    pid=$(cat "$state/$(name "$1").pid")
    kill -TERM -- "-$pid" 2>/dev/null
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$pid" 2>/dev/null
    rm -f "$state/$(name "$1").pid"
  elif ! unit_file "$1" >/dev/null; then
    echo "Failed to stop $(name "$1"): Unit $(name "$1") not loaded." >&2; return 5
  fi
}
start() {
  local f cmd user dir
  f=$(unit_file "$1") || { echo "Failed to start $(name "$1"): Unit $(name "$1") not found." >&2; return 5; }
  running "$1" && return 0
  cmd=$(directive ExecStart "$f") user=$(directive User "$f") dir=$(directive WorkingDirectory "$f")
  cmd=${cmd#[-@+!:]}
  [ -n "$cmd" ] || { echo "Failed to start $(name "$1"): it has no ExecStart=." >&2; return 1; }
  [ -d "${dir:-/}" ] || { echo "Failed to start $(name "$1"): no directory ${dir}." >&2; return 200; }
  mkdir -p "$state" || return 1
  (cd "${dir:-/}" && exec setsid ${user:+runuser -u "$user" --} sh -c "exec $cmd" </dev/null >/dev/null 2>&1) &
  echo $! > "$state/$(name "$1").pid"
}
rc=0
case "$verb" in
  daemon-reload) ;;
  enable|disable)
    # The unit files are the real systemctl's; --now starts or stops them here.
    /usr/bin/systemctl "$verb" "${units[@]}" || exit
    if $now; then
      for u in "${units[@]}"; do
        if [ "$verb" = enable ]; then start "$u" || rc=$?; else stop "$u" || rc=$?; fi
      done
    fi ;;
  start|stop) for u in "${units[@]}"; do "$verb" "$u" || rc=$?; done ;;
  restart) for u in "${units[@]}"; do { running "$u" && stop "$u"; start "$u"; } || rc=$?; done ;;
  is-active)
    rc=3
    for u in "${units[@]}"; do
      if running "$u"; then $quiet || echo active; rc=0; else $quiet || echo inactive; fi
    done ;;
  show)
    for u in "${units[@]}"; do
      for p in ${prop//,/ }; do
        case "$p" in
          LoadState) unit_file "$u" >/dev/null && v=loaded || v=not-found ;;
          ActiveState) running "$u" && v=active || v=inactive ;;
          UnitFileState) v=$(/usr/bin/systemctl is-enabled "$(name "$u")" 2>/dev/null) ;;
          *) v="" ;;
        esac
        if $value; then echo "$v"; else echo "$p=$v"; fi
      done
    done ;;
  *) exec /usr/bin/systemctl "${orig[@]}" ;;
esac
exit "$rc"
""")
os.chmod(os.path.join(_BIN, "systemd-manager"), 0o755)
# SSH sessions of an emulated instance (the sandbox's sshd, whose authorized key for an instance
# carries command=". ssh-session <instance id>", see "Authorized keys"): the same boot id and the
# same reboot stand-ins as its Run Command scripts. This host's own boot id is read only as the
# literal path, so the command's mentions of it are pointed at the instance's file.
with open(os.path.join(_BIN, "ssh-session"), "w") as f:
    f.write(f"""#!/bin/bash
# sshd's login shell sources this for each session of emulated instance $1 (its authorized
# key's command=). Every path ends in exec or in the command's own exit status.
export BAKERY_INSTANCE_ID="$1" PATH="{_BIN}:$PATH"
cmd="${{SSH_ORIGINAL_COMMAND:-}}"
enter=()
if [ "$EUID" -eq 0 ]; then
  # root works in the instance's own root filesystem ("Root instances").
  # The first root login boots the instance (its user data may take up to 10 minutes).
  root=$(curl -fsS --max-time 660 "http://127.0.0.1:$(cat {_BIN}/keys-port)/root?instance=$1") \
    || {{ echo "the emulator has no root filesystem for instance $1" >&2; exit 1; }}
  enter=(nsenter --target "${{root%% *}}" --mount --pid --uts --ipc -- \
    chroot "${{root#* }}" env -C "${{HOME:-/}}")
fi
case "$cmd" in
  internal-sftp|sftp|*/sftp-server) exec "${{enter[@]}}" /usr/lib/openssh/sftp-server ;;
  "") exec "${{enter[@]}}" bash -l ;;
esac
host_boot=/proc/sys/kernel/random/boot_id
cmd=${{cmd//"$host_boot"/{_BIN}/boot-$1}}
[ "${{#enter[@]}}" -eq 0 ] || exec "${{enter[@]}}" bash -c "$cmd"
# The build user's command runs in this shell, as sshd's `bash -c` would run it (one bash less
# per command: no arguments, no variables of this script's).
set --
unset enter host_boot
eval "$cmd"
""")
os.chmod(os.path.join(_BIN, "ssh-session"), 0o755)
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


def _node_filter(self):
    """The InstanceIds a DescribeInstanceInformation asks for (None: all)."""
    wanted = None
    for f in (self._get_param("Filters") or []) + (self._get_param("InstanceInformationFilterList") or []):
        key = f.get("Key") or f.get("key")
        if key == "InstanceIds":
            wanted = set(f.get("Values") or f.get("valueSet") or [])
    return wanted


def describe_instance_information(self):
    wanted = _node_filter(self)
    out = []
    for iid, inst in sorted(_managed(self).items()):
        if wanted is not None and iid not in wanted:
            continue
        if inst.state == "terminated":
            continue
        windows = (inst.platform or "").lower() == "windows"
        out.append({
            "InstanceId": iid,
            "PingStatus": "Online" if inst.state == "running" and time.time() >= max(_DOWN_UNTIL.get(iid, 0), _ONLINE_AT.get(iid, 0)) else "ConnectionLost",
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

# --- Accounts: assuming a role, and AMIs shared across accounts ------------------------------
# moto lets sts:AssumeRole into any role ARN, existing or not, and keeps an AMI visible only to
# the account that owns it. AWS refuses a role that does not exist, whose trust policy does not
# name the caller's account, or whose sts:ExternalId condition the call does not meet (all as
# AccessDenied); and an account sees (DescribeImages by id, or with ExecutableUsers=self) and
# launches the AMIs another account shared with it by launch permission. The exception is
# OrganizationAccountAccessRole, the role AWS Organizations creates in every member account for
# the management account: the harness uses it to set consumer accounts up.
from moto.iam.models import iam_backends
from moto.sts.exceptions import STSClientError
from moto.sts.models import STSBackend

ORGANIZATION_ROLE = "OrganizationAccountAccessRole"
_assume_role = STSBackend.assume_role


def _trusts(role, caller, external_id):
    try:
        doc = json.loads(role.assume_role_policy_document or "{}")
    except ValueError:
        return False
    statements = doc.get("Statement") or []
    if isinstance(statements, dict):
        statements = [statements]
    for st in statements:
        if st.get("Effect") != "Allow":
            continue
        principal = (st.get("Principal") or {})
        aws = principal.get("AWS") if isinstance(principal, dict) else principal
        aws = [aws] if isinstance(aws, str) else (aws or [])
        if not any(caller in a or a == "*" for a in aws):
            continue
        wanted = ((st.get("Condition") or {}).get("StringEquals") or {}).get("sts:ExternalId")
        if wanted is not None and wanted != external_id:
            continue
        return True
    return False


def assume_role(self, region_name, role_session_name, role_arn, policy, duration, external_id):
    parts = role_arn.split(":")
    account, name = (parts[4], parts[5].rsplit("/", 1)[-1]) if len(parts) >= 6 else ("", "")
    if name != ORGANIZATION_ROLE:
        role = next((r for r in iam_backends[account]["global"].roles.values() if r.name == name), None) \
            if account.isdigit() else None
        if role is None or not _trusts(role, self.account_id, external_id):
            raise STSClientError(
                "AccessDenied",
                f"User: arn:aws:iam::{self.account_id}:user/bakery is not authorized to perform: "
                f"sts:AssumeRole on resource: {role_arn}")
    return _assume_role(self, region_name, role_session_name, role_arn, policy, duration, external_id)


STSBackend.assume_role = assume_role

_describe_images_own = AmiBackend.describe_images


def _shared_with(backend):
    """AMIs of other accounts in this region that name this account in their launch permission."""
    out = []
    for account in list(ec2_backends.keys()):
        if account == backend.account_id:
            continue
        regions = ec2_backends[account]
        if backend.region_name not in dict.keys(regions):
            continue
        for ami in list(regions[backend.region_name].amis.values()):
            if any(lp.get("UserId") == backend.account_id for lp in ami.launch_permissions):
                out.append(ami)
    return out


def describe_images(self, ami_ids=None, filters=None, exec_users=None, owners=None):
    shared = _shared_with(self)
    if not shared:
        return _describe_images_own(self, ami_ids=ami_ids, filters=filters, exec_users=exec_users, owners=owners)
    if ami_ids:
        theirs = [a for a in shared if a.id in ami_ids]
        mine_ids = [i for i in ami_ids if i not in {a.id for a in theirs}]
        mine = []
        if mine_ids:
            try:
                mine = _describe_images_own(self, ami_ids=mine_ids)
            except Exception:
                if not theirs:
                    raise
        return mine + theirs
    mine = _describe_images_own(self, filters=filters, exec_users=exec_users, owners=owners)
    theirs = shared
    # With neither Owners nor ExecutableUsers, AWS lists every image the caller may launch.
    if owners:
        theirs = [a for a in theirs if a.owner_id in owners]
    elif exec_users and not ({"self", self.account_id} & set(exec_users)):
        theirs = []
    if filters:
        from moto.ec2.utils import generic_filter
        theirs = generic_filter(filters, theirs)
    return mine + theirs


AmiBackend.describe_images = describe_images


# --- Root instances ----------------------------------------------------------------------------
# An instance's root sessions (the sandbox's sshd lets root log in with an instance's key, whose
# command= is ssh-session) run in the instance's own root filesystem: a copy-on-write overlay of
# this host's /, whose upper layer belongs to the instance, in namespaces of the instance's own
# (see _HOLDER); each session joins them (nsenter) and chroots into the overlay. What a root step
# writes (a user in /etc/passwd, a unit in /etc/systemd/system, /opt/...) stays in the instance and
# goes when it is terminated: this host is never changed. Sessions of the build user run on the
# host itself, as before.
# An AMI made from such an instance carries its files (its upper layer, copied at CreateImage, and
# to every copy of the AMI): an instance launched from it starts with a copy of that layer as its
# own, over this host's /. Its first root login is its boot (sshd answers only then, in the
# sandbox): the units the AMI's layer enabled in multi-user.target.wants start (this host's own
# units never do), then a user data script runs as root, as cloud-init runs one (its output in
# /var/log/cloud-init-output.log; a failure does not stop the boot). Not modelled: a stop (its
# processes run on until it is terminated), units starting again at a reboot, and SSM commands
# (they run on the host, as the build user).
_Root = collections.namedtuple("_Root", "holder region base init")  # init: of its namespaces
_ROOTS = {}  # instance id -> _Root
_ROOTS_LOCK = threading.Lock()
_BOOTING = {}  # instance id -> its lock, held while it boots (other instances boot meanwhile)
_BOOT_TIMEOUT = 600  # seconds a user data script may run


def _launched_layer(backend, inst):
    """The layer of the AMI `inst` was launched from, if that AMI carries one."""
    return getattr(backend.amis.get(inst.image_id), "bakery_layer", None)


def _image_layer(backend, instance_id, ami):
    """At CreateImage: the AMI keeps a copy of a root instance's files (see "Root instances"), or
    the layer the instance started from when it never had a root login."""
    root = _ROOTS.get(instance_id)
    if not root:
        try:
            layer = _launched_layer(backend, backend.get_instance(instance_id))
        except Exception:
            layer = None
        if layer:
            ami.bakery_layer = layer
        return
    layer = os.path.join(_BIN, "layers", ami.id)
    os.makedirs(os.path.dirname(layer), exist_ok=True)
    # -a keeps what makes it a layer: whiteouts (0/0 devices) and opaque directories (xattrs).
    subprocess.run(["cp", "-a", os.path.join(root.base, "upper"), layer], check=True)
    ami.bakery_layer = layer


def _user_data(inst):
    raw = inst.user_data
    if isinstance(raw, (list, tuple)):
        raw = raw[0] if raw else None
    if not raw:
        return None
    # moto keeps it as sent: base64 (a Base64EncodedString, whose str() is the encoded text).
    raw = raw if isinstance(raw, bytes) else str(raw).encode()
    try:
        return base64.b64decode(raw, validate=True)
    except Exception:
        return raw


# The holder: init of the instance's own PID, mount, UTS and IPC namespaces (unshare --fork
# --kill-child: killing unshare kills init, and with it every process in the instance). Its
# mounts: the overlay; a fresh /proc (the instance's processes only; /proc/sys read-only); a
# read-only sysfs; a /dev of its own (the usual character devices, its own pts and shm); its own
# /tmp, /var/tmp and /run (no systemd or D-Bus socket of this host's in reach); and this
# emulator's directory, read-only but for the reboot requests. Then the boot, in the chroot: the
# AMI's enabled units start, the user data runs. Init then waits on its stdin, a pipe only the
# emulator holds: when the emulator exits, even killed with SIGKILL, the pipe closes, init exits
# and the kernel kills the rest.
_HOLDER = r"""set -eu
m=$1 base=$2 bin=$3 requests=$4 iid=$5 boot_timeout=$6
shift 6
mount -t overlay overlay -o "lowerdir=/,upperdir=$base/upper,workdir=$base/work" "$m"
mount -t proc proc "$m/proc"
for p in sys sysrq-trigger; do
  [ -e "$m/proc/$p" ] || continue
  mount --bind "$m/proc/$p" "$m/proc/$p"
  mount -o remount,bind,ro "$m/proc/$p"
done
mount -t sysfs -o ro sysfs "$m/sys"
mount -t tmpfs -o mode=755,nosuid dev "$m/dev"
for d in null:1:3 zero:1:5 full:1:7 random:1:8 urandom:1:9 tty:5:0; do
  IFS=: read -r n major minor <<<"$d"
  mknod -m 666 "$m/dev/$n" c "$major" "$minor"
done
mkdir "$m/dev/pts" "$m/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666,mode=620 devpts "$m/dev/pts"
mount -t tmpfs -o mode=1777,nosuid,nodev shm "$m/dev/shm"
ln -s pts/ptmx "$m/dev/ptmx"
ln -s /proc/self/fd "$m/dev/fd"
for n in stdin:0 stdout:1 stderr:2; do ln -s "/proc/self/fd/${n#*:}" "$m/dev/${n%:*}"; done
mount --bind "$base/tmp" "$m/tmp"
mount --bind "$base/var-tmp" "$m/var/tmp"
mount --bind "$base/run" "$m/run"
mount --bind "$bin" "$m$bin"
mount -o remount,bind,ro "$m$bin"
mount --bind "$requests" "$m$requests"
enter() { chroot "$m" env -C / PATH="$bin:$PATH" BAKERY_INSTANCE_ID="$iid" "$@" </dev/null; }
for u in "$@"; do enter "$bin/systemd-manager" start "$u" || echo "unit $u did not start" >&2; done
if [ -f "$base/user-data" ]; then
  cp "$base/user-data" "$m/run/user-data"
  enter sh -c 'mkdir -p /var/log && exec timeout "$1" /bin/bash /run/user-data >>/var/log/cloud-init-output.log 2>&1' \
    _ "$boot_timeout" || echo "user data failed: $?" >&2
fi
echo ready
read -r _ || true
"""


def _root_of(iid, region):
    """The pid of the init of running instance `iid`'s namespaces and its root path, made (and
    booted) at its first root login."""
    with _ROOTS_LOCK:
        booting = _BOOTING.setdefault(iid, threading.Lock())
    with booting:
        root = _ROOTS.get(iid)
        if root:
            if root.holder.poll() is not None:
                raise RuntimeError(f"instance {iid} is down (its root filesystem's holder exited)")
            return root.init, os.path.join(root.base, "merged")
        backend = ec2_backends[DEFAULT_ACCOUNT_ID][region]
        inst = backend.get_instance(iid)
        layer = _launched_layer(backend, inst)
        base = os.path.join(_BIN, f"root-{iid}")
        for d in ("upper", "work", "merged", "tmp", "var-tmp", "run"):
            os.makedirs(os.path.join(base, d), exist_ok=True)
        for d in ("tmp", "var-tmp"):
            os.chmod(os.path.join(base, d), 0o1777)
        os.chmod(os.path.join(base, "run"), 0o755)
        merged = os.path.join(base, "merged")
        units = []
        if layer:
            # Its root volume starts as the AMI's snapshot: the layer, over this host's / (a copy,
            # as overlayfs refuses a second lower layer that lies inside /).
            subprocess.run(["cp", "-a", f"{layer}/.", os.path.join(base, "upper")], check=True)
            # What `systemctl enable` made: symlinks (a whiteout is one removed).
            wants = os.path.join(layer, "etc/systemd/system/multi-user.target.wants")
            units = sorted(u for u in (os.listdir(wants) if os.path.isdir(wants) else [])
                           if os.path.islink(os.path.join(wants, u)))
        user_data = _user_data(inst)
        if user_data and user_data.startswith(b"#!"):
            with open(os.path.join(base, "user-data"), "wb") as f:
                f.write(user_data)
        log = open(os.path.join(base, "holder.log"), "wb")
        p = subprocess.Popen(
            ["unshare", "--mount", "--pid", "--fork", "--kill-child", "--uts", "--ipc",
             "--propagation", "private", "bash", "-c", _HOLDER, "holder",
             merged, base, _BIN, _REQUESTS, iid, str(_BOOT_TIMEOUT), *units],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, start_new_session=True)
        log.close()
        ready = p.stdout.readline().strip() == b"ready"
        try:
            with open(f"/proc/{p.pid}/task/{p.pid}/children") as f:
                init = int(f.read().split()[0])
        except (OSError, IndexError, ValueError):
            init = None
        if not ready or init is None:
            p.kill()
            p.wait()
            with open(os.path.join(base, "holder.log"), errors="replace") as f:
                err = f.read().strip()
            shutil.rmtree(base, ignore_errors=True)
            raise RuntimeError(f"root filesystem of {iid}: {err}")
        with _ROOTS_LOCK:
            _ROOTS[iid] = _Root(p, region, base, init)
        return init, merged


def _drop_root(iid):
    """Stops everything in a terminated instance (its namespaces' init, and so the rest) and
    removes its root filesystem."""
    with _ROOTS_LOCK:
        root = _ROOTS.pop(iid, None)
        _BOOTING.pop(iid, None)
    if not root:
        return
    root.holder.kill()
    root.holder.wait()
    shutil.rmtree(root.base, ignore_errors=True)


def _reap_roots():
    while True:
        time.sleep(0.5)
        for iid, root in list(_ROOTS.items()):
            try:
                inst = ec2_backends[DEFAULT_ACCOUNT_ID][root.region].get_instance(iid)
                gone = inst._state.name == "terminated"
            except Exception:
                gone = True
            if gone:
                _drop_root(iid)


threading.Thread(target=_reap_roots, daemon=True).start()


# --- Authorized keys, for the sandbox's sshd ------------------------------------------------
# sshd asks its AuthorizedKeysCommand twice per login (once whether the key would do, once to
# check the signature). Answering that through the Query API cost two Python start-ups and four
# API calls per login; this side server answers from the emulator's own state instead: the
# public key of every key pair attached to a running instance of the default account in a region,
# if it is the key offered (GET /authorized-keys?region=R&key=BASE64).
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

from moto.core import DEFAULT_ACCOUNT_ID


class _Keys(BaseHTTPRequestHandler):
    def do_GET(self):
        q = parse_qs(self.path.partition("?")[2])
        if self.path.startswith("/root?"):
            return self._root((q.get("instance") or [""])[0])
        region = (q.get("region") or ["us-east-1"])[0]
        offered = (q.get("key") or [""])[0]
        lines = []
        try:
            backend = ec2_backends[DEFAULT_ACCOUNT_ID][region]
            # The running instance a key logs in to (a bake's build and test instances share
            # their key pair, but capture stops the build instance before the test one runs).
            running = {i.key_name: i.id for r in backend.all_reservations() for i in r.instances
                       if i._state.name == "running"}
            for kp in list(backend.key_pairs.values()):
                parts = kp.public_key.split()
                if kp.key_name in running and len(parts) >= 2 and parts[1] == offered:
                    iid = running[kp.key_name]
                    _boot_file(iid)
                    # Sourced by the login shell's `bash -c`: one bash per command, not two.
                    lines.append(f'command=". {_BIN}/ssh-session {iid}" ' + " ".join(parts[:2]))
        except Exception as e:
            print(f"authorized keys: {e!r}", file=sys.stderr)
        body = "".join(l + "\n" for l in lines).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _root(self, iid):
        # Only a running instance has a root filesystem to log in to.
        status, body = 404, b"no such running instance\n"
        for region, backend in ec2_backends[DEFAULT_ACCOUNT_ID].items():
            try:
                inst = backend.get_instance(iid)
            except Exception:
                continue
            if inst._state.name == "running":
                try:
                    pid, root = _root_of(iid, region)
                    status, body = 200, f"{pid} {root}".encode()
                except Exception as e:
                    print(f"root filesystem of {iid}: {e!r}", file=sys.stderr)
                    status, body = 500, f"{e}\n".encode()
            break
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def _serve_keys(port_file):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Keys)
    server.daemon_threads = True
    # ssh-session reads it from the emulator's own directory.
    for path in (os.path.join(_BIN, "keys-port"), port_file):
        with open(path + ".tmp", "w") as f:
            f.write(str(server.server_address[1]))
        os.chmod(path + ".tmp", 0o644)
        os.replace(path + ".tmp", path)
    threading.Thread(target=server.serve_forever, daemon=True).start()


if __name__ == "__main__":
    if os.environ.get("BAKERY_EMULATOR_KEYS_PORT_FILE"):
        _serve_keys(os.environ["BAKERY_EMULATOR_KEYS_PORT_FILE"])
    import atexit
    import shutil

    from moto.server import main

    # moto's server exits through sys.exit on SIGTERM/SIGINT: atexit handlers run.
    atexit.register(shutil.rmtree, _BIN, True)
    atexit.register(lambda: [_drop_root(i) for i in list(_ROOTS)])
    # Scripts still running stop with the emulator (a test stops what it started).
    atexit.register(lambda: [_kill(p) for p in list(_PROCS.values())])

    main(["-H", sys.argv[1], "-p", sys.argv[2]])
