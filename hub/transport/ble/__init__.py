"""BLE transport of the hub: bleak on BlueZ (a Raspberry Pi's own radio) or on a Bumble host stack (a USB/UART
dongle driven without BlueZ, or the emulated air), selected by one adapter spec (``backend.open_backend``).
"""
