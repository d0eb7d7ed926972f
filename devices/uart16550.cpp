#include "devices/uart16550.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "base/log.h"

namespace conduit::devices {

namespace {

// IER bits.
constexpr uint8_t kIerRdi = 0x01;   // received data available
constexpr uint8_t kIerThri = 0x02;  // transmitter holding register empty
constexpr uint8_t kIerRlsi = 0x04;  // receiver line status
constexpr uint8_t kIerMsi = 0x08;   // modem status

// IIR values (bit 0 set = nothing pending).
constexpr uint8_t kIirNoInt = 0x01;
constexpr uint8_t kIirMsi = 0x00;
constexpr uint8_t kIirThri = 0x02;
constexpr uint8_t kIirRdi = 0x04;
constexpr uint8_t kIirRlsi = 0x06;
constexpr uint8_t kIirTimeout = 0x0C;
constexpr uint8_t kIirFifoEnabled = 0xC0;

// FCR bits.
constexpr uint8_t kFcrEnable = 0x01;
constexpr uint8_t kFcrClearRx = 0x02;
constexpr uint8_t kFcrClearTx = 0x04;
constexpr uint8_t kFcrKeep = 0xC9;  // enable, DMA mode select, trigger level

constexpr uint8_t kLcrDlab = 0x80;

// MCR bits.
constexpr uint8_t kMcrDtr = 0x01;
constexpr uint8_t kMcrRts = 0x02;
constexpr uint8_t kMcrOut1 = 0x04;
constexpr uint8_t kMcrOut2 = 0x08;
constexpr uint8_t kMcrLoop = 0x10;

// LSR bits.
constexpr uint8_t kLsrDr = 0x01;
constexpr uint8_t kLsrOe = 0x02;
constexpr uint8_t kLsrThre = 0x20;
constexpr uint8_t kLsrTemt = 0x40;

// MSR bits: deltas in the low nibble, line states in the high one.
constexpr uint8_t kMsrDcts = 0x01;
constexpr uint8_t kMsrDdsr = 0x02;
constexpr uint8_t kMsrTeri = 0x04;
constexpr uint8_t kMsrDdcd = 0x08;
constexpr uint8_t kMsrCts = 0x10;
constexpr uint8_t kMsrDsr = 0x20;
constexpr uint8_t kMsrRi = 0x40;
constexpr uint8_t kMsrDcd = 0x80;
// With nothing attached the modem inputs read as a ready peer (as QEMU presents them).
constexpr uint8_t kMsrIdle = kMsrDcd | kMsrDsr | kMsrCts;

}  // namespace

Uart16550::Uart16550(std::shared_ptr<InterruptLine> irq, UniqueFd output, std::string name)
    : irq_(std::move(irq)), output_(std::move(output)), name_(std::move(name)), msr_(kMsrIdle) {}

Uart16550::~Uart16550() = default;  // output is written through: nothing left to flush

void Uart16550::read(uint64_t offset, std::span<uint8_t> data) {
    // The UART is byte-wide: a wider access reads consecutive registers, as a split access would.
    std::lock_guard lock(mutex_);
    for (size_t i = 0; i < data.size(); ++i) {
        const uint64_t reg = offset + i;
        data[i] = reg < kPortCount ? readRegister(static_cast<uint8_t>(reg)) : 0xff;
    }
    updateIrq();
}

void Uart16550::write(uint64_t offset, std::span<const uint8_t> data) {
    std::lock_guard lock(mutex_);
    for (size_t i = 0; i < data.size(); ++i) {
        const uint64_t reg = offset + i;
        if (reg < kPortCount) writeRegister(static_cast<uint8_t>(reg), data[i]);
    }
    updateIrq();
}

uint8_t Uart16550::readRegister(uint8_t reg) {
    const bool dlab = lcr_ & kLcrDlab;
    switch (reg) {
    case RBR_THR: {
        if (dlab) return static_cast<uint8_t>(divisor_ & 0xff);
        if (rx_.empty()) return 0;
        uint8_t byte = rx_.front();
        rx_.pop_front();
        return byte;
    }
    case IER:
        return dlab ? static_cast<uint8_t>(divisor_ >> 8) : ier_;
    case IIR_FCR: {
        uint8_t iir = computeIir();
        // Reading IIR acknowledges a THRE interrupt, but only when THRE is what it reports.
        if ((iir & 0x0f) == kIirThri) thrInterrupt_ = false;
        return iir;
    }
    case LCR:
        return lcr_;
    case MCR:
        return mcr_;
    case LSR: {
        uint8_t lsr = kLsrThre | kLsrTemt | lsrErrors_;
        if (!rx_.empty()) lsr |= kLsrDr;
        lsrErrors_ = 0;  // error bits clear on read
        return lsr;
    }
    case MSR: {
        uint8_t msr = msr_;
        msr_ &= 0xf0;  // deltas clear on read
        return msr;
    }
    case SCR:
        return scr_;
    }
    return 0xff;
}

void Uart16550::writeRegister(uint8_t reg, uint8_t value) {
    const bool dlab = lcr_ & kLcrDlab;
    switch (reg) {
    case RBR_THR:
        if (dlab) {
            divisor_ = static_cast<uint16_t>((divisor_ & 0xff00) | value);
            return;
        }
        // Writing THR clears a pending THRE interrupt; the byte leaves at once and the empty
        // holding register raises THRE again.
        thrInterrupt_ = false;
        updateIrq();
        transmit(value);
        thrInterrupt_ = true;
        return;
    case IER:
        if (dlab) {
            divisor_ = static_cast<uint16_t>((divisor_ & 0x00ff) | (value << 8));
            return;
        }
        {
            const uint8_t old = ier_;
            ier_ = value & 0x0f;
            // Enabling ETBEI while THR is empty (always, here) raises THRE at once; the 8250 driver
            // probes for exactly this.
            if ((ier_ & kIerThri) && !(old & kIerThri)) thrInterrupt_ = true;
            if (!(ier_ & kIerThri)) thrInterrupt_ = false;
        }
        return;
    case IIR_FCR:
        if ((value & kFcrEnable) != (fcr_ & kFcrEnable)) rx_.clear();  // toggling the FIFOs empties them
        if (value & kFcrEnable) {
            if (value & kFcrClearRx) rx_.clear();
            (void)kFcrClearTx;  // the transmitter never holds anything
            fcr_ = value & kFcrKeep;
        } else {
            fcr_ = 0;
        }
        return;
    case LCR:
        lcr_ = value;
        return;
    case MCR: {
        mcr_ = value & 0x1f;
        if (mcr_ & kMcrLoop) {
            // Loopback wires the modem outputs back to the inputs: RTS->CTS, DTR->DSR, OUT1->RI,
            // OUT2->DCD.
            uint8_t status = 0;
            if (mcr_ & kMcrRts) status |= kMsrCts;
            if (mcr_ & kMcrDtr) status |= kMsrDsr;
            if (mcr_ & kMcrOut1) status |= kMsrRi;
            if (mcr_ & kMcrOut2) status |= kMsrDcd;
            setModemInputs(status);
        } else {
            setModemInputs(kMsrIdle);
        }
        return;
    }
    case LSR:
    case MSR:
        return;  // read-only here (factory test writes on real parts)
    case SCR:
        scr_ = value;
        return;
    }
}

void Uart16550::setModemInputs(uint8_t status) {
    const uint8_t old = msr_ & 0xf0;
    uint8_t delta = 0;
    if ((old ^ status) & kMsrCts) delta |= kMsrDcts;
    if ((old ^ status) & kMsrDsr) delta |= kMsrDdsr;
    if ((old & kMsrRi) && !(status & kMsrRi)) delta |= kMsrTeri;  // trailing edge of RI only
    if ((old ^ status) & kMsrDcd) delta |= kMsrDdcd;
    msr_ = static_cast<uint8_t>(status | (msr_ & 0x0f) | delta);
}

void Uart16550::transmit(uint8_t byte) {
    if (mcr_ & kMcrLoop) {
        pushRx(byte);
        return;
    }
    transmitted_.fetch_add(1, std::memory_order_relaxed);
    if (!output_.valid() || outputFailed_) return;
    // Written through, so nothing is lost when the guest exits right after printing.
    for (;;) {
        ssize_t n = ::write(output_.get(), &byte, 1);
        if (n == 1) return;
        if (n < 0 && errno == EINTR) continue;
        // Don't fail the guest over a closed pipe: log once and discard from now on.
        log::get("devices").warn("{}: writing output failed: {}; discarding further output", name_,
                                 n < 0 ? std::strerror(errno) : "short write");
        outputFailed_ = true;
        return;
    }
}

void Uart16550::pushRx(uint8_t byte) {
    if (rx_.size() >= kRxCapacity) {
        lsrErrors_ |= kLsrOe;
        return;
    }
    rx_.push_back(byte);
}

void Uart16550::receive(std::span<const uint8_t> bytes) {
    std::lock_guard lock(mutex_);
    if (mcr_ & kMcrLoop) return;  // in loopback the serial input is disconnected
    for (uint8_t b : bytes) pushRx(b);
    updateIrq();
}

size_t Uart16550::rxFree() const {
    std::lock_guard lock(mutex_);
    return kRxCapacity - rx_.size();
}

size_t Uart16550::rxTriggerLevel() const {
    static constexpr size_t kLevels[4] = {1, 4, 8, 14};
    return kLevels[fcr_ >> 6];
}

uint8_t Uart16550::computeIir() const {
    const bool fifo = fcr_ & kFcrEnable;
    uint8_t iir = kIirNoInt;
    if ((ier_ & kIerRlsi) && (lsrErrors_ & kLsrOe)) {
        iir = kIirRlsi;
    } else if ((ier_ & kIerRdi) && !rx_.empty()) {
        iir = (!fifo || std::min(rx_.size(), kFifoSize) >= rxTriggerLevel()) ? kIirRdi : kIirTimeout;
    } else if ((ier_ & kIerThri) && thrInterrupt_) {
        iir = kIirThri;
    } else if ((ier_ & kIerMsi) && (msr_ & 0x0f)) {
        iir = kIirMsi;
    }
    return fifo ? static_cast<uint8_t>(iir | kIirFifoEnabled) : iir;
}

void Uart16550::updateIrq() {
    const bool level = !(computeIir() & kIirNoInt);
    if (level == irqLevel_) return;
    irqLevel_ = level;
    if (irq_) irq_->setLevel(level);
}

}  // namespace conduit::devices
