"""The sandbox's AWS emulator: moto's server, with documented AWS behaviour that bakery relies on
and moto 5.2.5 lacks filled in here (in the test harness, never in bakery itself):

- CopyImage applies its TagSpecifications to the new image (AWS does; moto ignores them).
- EnableImageDeprecation / DisableImageDeprecation set the image's DeprecationTime, which
  DescribeImages then reports (moto implements neither).

Tests inject faults with BAKERY_EMULATOR_FAULTS="Action:region,..." (e.g. "CopyImage:eu-west-1"):
each named call into that region fails once (with an error code the SDK does not retry).

Usage: python emulator.py HOST PORT
"""

import os
import sys

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

if __name__ == "__main__":
    from moto.server import main

    main(["-H", sys.argv[1], "-p", sys.argv[2]])
