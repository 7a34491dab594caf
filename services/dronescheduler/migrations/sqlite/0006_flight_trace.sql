-- The assignment's W3C trace context, so the flight clock's events continue the request's trace.
ALTER TABLE flights ADD COLUMN traceparent TEXT;
