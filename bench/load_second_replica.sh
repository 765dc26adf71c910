#!/usr/bin/env bash
# A second replica of lookup, retriever and packager beside `dicom-iso dev --port-base 200`
# (same bucket, PACS and HIS), for bench/load.py. Stop them by the PIDs in /tmp/loadB/*.pid.
set -u
V=/work/main/.venv/bin
export AWS_ACCESS_KEY_ID=dev AWS_SECRET_ACCESS_KEY=dev AWS_DEFAULT_REGION=us-east-1 \
  AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null \
  DICOMISO_S3_ENDPOINT_URL=http://127.0.0.1:9200 DICOMISO_S3_BUCKET=dicom-iso \
  DICOMISO_PACS_AET=ABPACS DICOMISO_PACS_HOST=127.0.0.1 DICOMISO_PACS_PORT=11312 \
  DICOMISO_LOOKUP_URL=http://127.0.0.1:8211 DICOMISO_RETRIEVER_URL=http://127.0.0.1:8212
mkdir -p /tmp/loadB/work
DICOMISO_HTTP_PORT=8211 DICOMISO_HIS_URL=mysql://dicomiso_demo:dicomiso-demo@127.0.0.1:3306 \
  $V/dicomiso-lookup > /tmp/loadB/lookup.log 2>&1 & echo $! > /tmp/loadB/lookup.pid
DICOMISO_HTTP_PORT=8212 DICOMISO_SCP_PORT=10314 $V/dicomiso-retriever > /tmp/loadB/retriever.log 2>&1 & echo $! > /tmp/loadB/retriever.pid
DICOMISO_HTTP_PORT=8213 DICOMISO_WORK_DIR=/tmp/loadB/work $V/dicomiso-packager > /tmp/loadB/packager.log 2>&1 & echo $! > /tmp/loadB/packager.pid
