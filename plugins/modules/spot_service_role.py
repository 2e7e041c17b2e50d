#!/usr/bin/python
"""Ansible module: make sure the EC2 Spot service-linked role exists."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: spot_service_role
short_description: Make sure the service-linked role AWSServiceRoleForEC2Spot exists
description:
  - The EC2 User Guide ("Service-linked role for Spot Instance requests") says that when you
    request Spot Instances through the API "you must first ensure that this role exists".
    Without it, and without permission to create it, the launch fails with
    AuthFailure.ServiceLinkedRoleCreationNotPermitted.
  - Looks the role up (iam:GetRole); creates it when missing
    (iam:CreateServiceLinkedRole for spot.amazonaws.com). When the caller may do neither, it
    fails with the one command an administrator runs.
  - Check mode reports whether it would create the role.
options: {}
extends_documentation_fragment:
  - spotbox_aws
author: spotbox
"""

EXAMPLES = r"""
- name: Make sure the spot service-linked role exists
  spot_service_role:
"""

RETURN = r"""
msg:
  description: What was found or done.
  returned: always
  type: str
"""

import contextlib

with contextlib.suppress(ImportError):  # AnsibleAWSModule reports a missing botocore
    import botocore

from ansible.module_utils.spotbox_aws import error_code, error_message
from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule

ROLE = "AWSServiceRoleForEC2Spot"
SERVICE = "spot.amazonaws.com"
ADMIN_COMMAND = f"aws iam create-service-linked-role --aws-service-name {SERVICE}"
DENIED = ("AccessDenied", "AccessDeniedException", "UnauthorizedOperation")


def main() -> None:
    module = AnsibleAWSModule(argument_spec={}, supports_check_mode=True)
    iam = module.client("iam")
    try:
        iam.get_role(RoleName=ROLE)
        module.exit_json(changed=False, msg=f"{ROLE} exists")
    except botocore.exceptions.ClientError as exc:
        if error_code(exc) == "NoSuchEntity":
            exists = False
        elif error_code(exc) in DENIED:
            exists = None  # unknown: creating it tells
        else:
            module.fail_json(msg=f"could not look up {ROLE} ({error_code(exc)}: "
                             f"{error_message(exc)})")
    except botocore.exceptions.BotoCoreError as exc:
        module.fail_json(msg=f"AWS could not be asked: {exc}")
    if module.check_mode:
        module.exit_json(changed=exists is False, msg=f"would create {ROLE} if missing")
    try:
        iam.create_service_linked_role(AWSServiceName=SERVICE)
        module.exit_json(changed=True, msg=f"created {ROLE} (once per account)")
    except botocore.exceptions.ClientError as exc:
        # AWS answers InvalidInput "...has been taken in this account" when it exists.
        if error_code(exc) == "InvalidInput" and "taken" in error_message(exc):
            module.exit_json(changed=False, msg=f"{ROLE} exists")
        if error_code(exc) in DENIED and exists is None:
            module.warn(f"could not check whether {ROLE} exists (this identity may neither read "
                        f"nor create it); if the launch fails for it, an administrator runs "
                        f"once: {ADMIN_COMMAND}")
            module.exit_json(changed=False, msg=f"{ROLE}: unknown")
        if error_code(exc) in DENIED:
            module.fail_json(msg=(
                f"the spot service-linked role {ROLE} does not exist and this AWS identity "
                "may not create it, so AWS would refuse every spot "
                f"launch (AuthFailure.ServiceLinkedRoleCreationNotPermitted). An administrator "
                f"runs once for the account: {ADMIN_COMMAND}"))
        module.fail_json(msg=f"could not create {ROLE} ({error_code(exc)}: {error_message(exc)})")


if __name__ == "__main__":
    main()
