"""The only place that imports motor and aio_pika."""
