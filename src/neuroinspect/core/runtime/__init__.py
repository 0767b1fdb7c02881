"""Where work runs: the one :class:`~neuroinspect.core.runtime.device.DevicePolicy`, torchrun's process
group (nothing without torchrun), and progress bars."""
