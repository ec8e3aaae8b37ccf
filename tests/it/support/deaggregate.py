"""De-aggregates Kinesis records with awslabs' aws-kinesis-agg (an independent
KPL implementation, as KCL and Lambda use it). Reads a JSON list of records as
GetRecords returns them on stdin; prints a JSON list of user records:
{"partition_key", "data" (base64), "aggregated"}."""
import base64
import json
import sys

from aws_kinesis_agg.deaggregator import deaggregate_records

records = [
    {
        "kinesis": {
            "kinesisSchemaVersion": "1.0",
            "sequenceNumber": r["SequenceNumber"],
            "approximateArrivalTimestamp": 0,
            "partitionKey": r["PartitionKey"],
            "data": r["Data"],
        }
    }
    for r in json.load(sys.stdin)
]
out = []
for user in deaggregate_records(records):
    k = user["kinesis"]
    data = k["data"]
    if isinstance(data, bytes):
        data = data.decode()
    out.append(
        {
            "partition_key": k["partitionKey"],
            "data": data,
            "aggregated": bool(k.get("aggregated", False)),
        }
    )
json.dump(out, sys.stdout)
