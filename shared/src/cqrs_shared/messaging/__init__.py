"""RabbitMQ plumbing (aio-pika). The only shared module that imports the AMQP driver."""
