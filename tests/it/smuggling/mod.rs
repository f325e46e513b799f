mod differential;
mod framing;
mod framing_properties;
mod hostile;
