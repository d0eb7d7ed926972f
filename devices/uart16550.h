// A 16550A UART (8 I/O ports) with 16-byte FIFOs, as Linux's 8250 driver and simple payloads use it.
//
// Model:
//  - Transmission is instantaneous: a THR write goes straight to the output fd (or, in loopback,
//    into the receive FIFO), so THRE and TEMT are always set when the guest looks at LSR.
//  - Receive: bytes from receive() queue in a bounded host buffer (kRxCapacity); the guest sees
//    them through RBR one at a time. Bytes that do not fit set LSR.OE and are dropped.
//  - Interrupt sources, highest priority first: receiver line status (IER bit 2: OE), received
//    data (IER bit 0), THR empty (IER bit 1), modem status (IER bit 3).
//    * With FIFOs enabled, data at or above the trigger level reads as "data available" (IIR 0x04);
//      data below it reads as "character timeout" (IIR 0x0C) at once, since there is no clock to
//      time out against. Both are cleared by draining the FIFO.
//    * THRE rises when ETBEI is enabled with an empty THR (Linux probes this at startup) and after
//      each transmitted byte; it is cleared by reading IIR while THRE is the reported source, or
//      by writing THR (which, the transmitter being instant, re-raises it: the line drops and
//      rises again, a fresh edge for an edge-triggered pin).
//  - The interrupt line is NOT gated by MCR.OUT2. On a PC, OUT2 enables the board's IRQ driver;
//    Linux sets it, but a bare payload may not, and QEMU does not gate either. The line level is
//    simply "some enabled condition is pending".
//
// Thread-safety: every register access and receive() take one mutex; the interrupt line is driven
// with that mutex held so levels reach the controller in the order the state changed.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <span>
#include <string>

#include "base/unique_fd.h"
#include "devices/bus_device.h"
#include "devices/interrupt_line.h"

namespace conduit::devices {

class Uart16550 final : public BusDevice {
public:
    static constexpr uint64_t kPortCount = 8;
    static constexpr size_t kFifoSize = 16;      // the 16550A's hardware FIFO depth
    static constexpr size_t kRxCapacity = 4096;  // host-side input buffer in front of the RX FIFO

    // Register offsets.
    enum : uint8_t { RBR_THR = 0, IER = 1, IIR_FCR = 2, LCR = 3, MCR = 4, LSR = 5, MSR = 6, SCR = 7 };

    // `irq` may be null (polled use). `output` receives every transmitted byte; an invalid fd
    // discards them. `name` is for logs ("uart@0x3f8").
    Uart16550(std::shared_ptr<InterruptLine> irq, UniqueFd output, std::string name = "uart@0x3f8");
    ~Uart16550() override;

    std::string name() const override { return name_; }
    void read(uint64_t offset, std::span<uint8_t> data) override;
    void write(uint64_t offset, std::span<const uint8_t> data) override;

    // Host input (thread-safe): queues bytes for the guest and raises the RX interrupt if enabled.
    void receive(std::span<const uint8_t> bytes);
    // Free space in the receive buffer, so an input pump can apply back-pressure instead of
    // overrunning the guest.
    size_t rxFree() const;
    // Bytes the guest sent out of the UART (loopback bytes are not counted).
    uint64_t bytesTransmitted() const { return transmitted_.load(std::memory_order_relaxed); }

private:
    uint8_t readRegister(uint8_t reg);
    void writeRegister(uint8_t reg, uint8_t value);
    void transmit(uint8_t byte);
    void pushRx(uint8_t byte);  // into the RX buffer, or OE when full
    void setModemInputs(uint8_t msrStatus);
    uint8_t computeIir() const;
    size_t rxTriggerLevel() const;
    void updateIrq();

    std::shared_ptr<InterruptLine> irq_;
    UniqueFd output_;
    std::string name_;

    mutable std::mutex mutex_;
    std::deque<uint8_t> rx_;
    uint8_t ier_ = 0;
    uint8_t fcr_ = 0;  // FIFO enable (bit 0) and trigger level (bits 6-7); the clear bits self-reset
    uint8_t lcr_ = 0;
    uint8_t mcr_ = 0;
    uint8_t lsrErrors_ = 0;  // sticky LSR error bits (OE), cleared by reading LSR
    uint8_t msr_ = 0;
    uint8_t scr_ = 0;
    uint16_t divisor_ = 12;  // 9600 baud at 1.8432 MHz, as after a PC BIOS
    bool thrInterrupt_ = false;
    bool irqLevel_ = false;
    std::atomic<uint64_t> transmitted_{0};
    bool outputFailed_ = false;
};

}  // namespace conduit::devices
