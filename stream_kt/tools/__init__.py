"""Tools around the service: local brokers, replay (load generator), follow (reads the
outputs back), inspect (one student's state), the demo and process supervision."""
