"""The collector: MQTT in, validated line protocol out to InfluxDB.

intake (MQTT, manual acks) → processing (validate against the device profile,
encode) → output (batched writes to InfluxDB) → acknowledgement to the broker.
A message is acknowledged only once its point is written, or once it is
in the dead-letter topic with its reason.
"""
