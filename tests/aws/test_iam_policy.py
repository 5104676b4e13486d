"""config/aws/iam-policy.json grants every AWS call the suite makes, and nothing it does not:
read from the code (fabfile/aws/), so the document cannot drift from it."""

from __future__ import annotations

import json
import re

import botocore.session
from botocore import xform_name

from tests.conftest import ROOT

POLICY = ROOT / "config" / "aws" / "iam-policy.json"
# actions no boto3 call names: KMS works behind Secrets Manager and SSM SecureStrings; EC2
# asks for CreateTags on the snapshot CreateSnapshot tags (TagSpecifications)
IMPLIED = {"kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey", "ec2:CreateTags",
           # S3: an upload with a retention, HEAD of a version and its retention
           "s3:PutObjectRetention", "s3:GetObjectVersion", "s3:GetObjectRetention"}
# S3's IAM actions are not its operations' names
S3_ACTIONS = {"GetObjectLockConfiguration": "GetBucketObjectLockConfiguration",
              "CreateMultipartUpload": "PutObject", "UploadPart": "PutObject",
              "CompleteMultipartUpload": "PutObject", "ListObjectsV2": "ListBucket",
              "HeadObject": "GetObject", "ListObjectVersions": "ListBucketVersions",
              "DeleteObject": "DeleteObjectVersion",
              "GetBucketEncryption": "GetEncryptionConfiguration",
              "GetPublicAccessBlock": "GetBucketPublicAccessBlock"}
# IAM's prefix where it is not the service's signing name
IAM_PREFIX = {"monitoring": "cloudwatch"}


def actions_in_the_code() -> set[str]:
    session = botocore.session.get_session()
    found = set()
    for path in (ROOT / "fabfile" / "aws").glob("*.py"):
        text = path.read_text()
        for service in set(re.findall(r'client\((?:self\.)?env, "([a-z0-9]+)"\)', text)):
            model = session.get_service_model(service)
            prefix = IAM_PREFIX.get(model.signing_name, model.signing_name)
            for operation in model.operation_names:
                if re.search(rf'[.("]{xform_name(operation)}[(")]', text):
                    action = S3_ACTIONS.get(operation, operation) if prefix == "s3" else operation
                    found.add(f"{prefix}:{action}")
    return found


def granted() -> set[str]:
    doc = json.loads(POLICY.read_text())
    assert doc["Version"] == "2012-10-17"
    return {a for s in doc["Statement"] for a in s["Action"] if s["Effect"] == "Allow"}


def test_the_policy_grants_every_call_and_nothing_else():
    used = actions_in_the_code()
    assert "secretsmanager:GetSecretValue" in used and "ecr:GetAuthorizationToken" in used
    assert used - granted() == set(), "calls the policy does not grant"
    assert granted() - used - IMPLIED == set(), "grants no call needs"
