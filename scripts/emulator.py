"""The sandbox's AWS emulator: moto's server, with documented AWS behaviour that bakery relies on
and moto 5.2.5 lacks filled in here (in the test harness, never in bakery itself):

- CopyImage applies its TagSpecifications to the new image (AWS does; moto ignores them).
- EnableImageDeprecation / DisableImageDeprecation set the image's DeprecationTime, which
  DescribeImages then reports (moto implements neither).

Every call is appended to $BAKERY_EMULATOR_ACTIONS (when set) as a JSON line: time, service,
action and the ids it named (InstanceId.N / ImageId.N, and the values of DescribeInstances'
`instance-id` / DescribeImages' `image-id` filter), so
tests can count calls per action and see how many resources one call covered.

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

if __name__ == "__main__":
    from moto.server import main

    main(["-H", sys.argv[1], "-p", sys.argv[2]])
