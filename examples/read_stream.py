"""Reads every record of a Kinesis stream from a local emulator and prints a summary.

Usage: read_stream.py ENDPOINT STREAM EXPECTED
Waits up to 60 s until EXPECTED records are there; exits 1 if they never are.
The emulator does not check signatures, so the Authorization header is a dummy.
"""
import base64, json, sys, time, urllib.request

endpoint, stream, expected = sys.argv[1], sys.argv[2], int(sys.argv[3])

def call(target, body):
    request = urllib.request.Request(endpoint, data=json.dumps(body).encode(), method="POST", headers={
        "X-Amz-Target": "Kinesis_20131202." + target,
        "Content-Type": "application/x-amz-json-1.1",
        "X-Amz-Date": time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()),
        "Authorization": "AWS4-HMAC-SHA256 Credential=demo/20260101/us-east-1/kinesis/aws4_request, SignedHeaders=host, Signature=0",
    })
    with urllib.request.urlopen(request) as response:
        return json.load(response)

def read_all():
    records = []
    shards = call("ListShards", {"StreamName": stream})["Shards"]
    for shard in shards:
        iterator = call("GetShardIterator", {"StreamName": stream, "ShardId": shard["ShardId"],
                                             "ShardIteratorType": "TRIM_HORIZON"})["ShardIterator"]
        while iterator:
            page = call("GetRecords", {"ShardIterator": iterator, "Limit": 10000})
            records += page["Records"]
            if not page["Records"] or page.get("MillisBehindLatest", 0) == 0:
                break
            iterator = page.get("NextShardIterator")
    return records

deadline = time.time() + 60
records = read_all()
while len(records) < expected and time.time() < deadline:
    time.sleep(0.5)
    records = read_all()
print(f"{len(records)} records in stream {stream!r} (expected {expected})")
by_broker = {}
for record in records:
    data = json.loads(base64.b64decode(record["Data"]))
    by_broker[data.get("broker_id")] = by_broker.get(data.get("broker_id"), 0) + 1
print("records per broker:", dict(sorted(by_broker.items())))
for record in records[:2] + records[-2:]:
    print("  partition key", record["PartitionKey"], "->", base64.b64decode(record["Data"]).decode())
sys.exit(0 if len(records) >= expected else 1)
