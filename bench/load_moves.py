"""After bench/load.py: per study, how many retrieval jobs transferred it, and who ran the jobs.

uv run --frozen python bench/load_moves.py http://127.0.0.1:9200   # the dev stack's moto
"""

import collections
import json
import sys

import boto3

s3 = boto3.client(
    "s3",
    endpoint_url=sys.argv[1],
    region_name="us-east-1",
    aws_access_key_id="dev",
    aws_secret_access_key="dev",
)
moved: collections.Counter[str] = collections.Counter()
seen: collections.Counter[str] = collections.Counter()
jobs = 0
pages = s3.get_paginator("list_objects_v2").paginate(Bucket="dicom-iso", Prefix="jobs/retrieve/")
for page in pages:
    for obj in page.get("Contents", []):
        rec = json.loads(s3.get_object(Bucket="dicom-iso", Key=obj["Key"])["Body"].read())
        jobs += 1
        for st in rec.get("result", {}).get("studies", []):
            seen[st["study_uid"]] += 1
            moved[st["study_uid"]] += bool(st.get("transferred"))
owners: collections.Counter[tuple[str, str | None]] = collections.Counter()
for prefix in ("jobs/retrieve/", "jobs/package/"):
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket="dicom-iso", Prefix=prefix):
        for obj in page.get("Contents", []):
            rec = json.loads(s3.get_object(Bucket="dicom-iso", Key=obj["Key"])["Body"].read())
            owners[(prefix.split("/")[1], rec.get("owner"))] += 1
report = {
    "retrieval_jobs": jobs,
    "studies": len(seen),
    "moves_per_study": sorted(collections.Counter(moved.values()).items()),
    "jobs_per_owner": {f"{k[0]}:{k[1]}": v for k, v in owners.items()},
}
print(json.dumps(report, indent=1))  # noqa: T201 - a bench script reports on stdout
