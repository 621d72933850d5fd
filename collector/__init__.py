"""The collector: MQTT in, validated line protocol out to InfluxDB.

intake (MQTT, manual acks) → processing (validate against the device profile,
encode) → output (batched writes to InfluxDB, or to the on-disk spool while InfluxDB
cannot take them) → acknowledgement to the broker. A message is acknowledged only
once its point is durable (in InfluxDB or the spool), or once it is in the
dead-letter topic with its reason.
"""
