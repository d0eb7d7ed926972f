#include "devices/uart16550.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <string>
#include <vector>

namespace conduit::devices {
namespace {

class FakeLine : public InterruptLine {
public:
    void setLevel(bool asserted) override { levels.push_back(asserted); }
    bool level() const { return !levels.empty() && levels.back(); }
    std::vector<bool> levels;
};

struct Pipe {
    Pipe() {
        int fds[2];
        EXPECT_EQ(::pipe2(fds, O_NONBLOCK | O_CLOEXEC), 0);
        readEnd.reset(fds[0]);
        writeEnd.reset(fds[1]);
    }
    std::string drain() {
        std::string out;
        char buf[256];
        ssize_t n;
        while ((n = ::read(readEnd.get(), buf, sizeof buf)) > 0) out.append(buf, n);
        return out;
    }
    UniqueFd readEnd, writeEnd;
};

class UartTest : public ::testing::Test {
protected:
    UartTest() : line(std::make_shared<FakeLine>()), uart(line, std::move(pipe.writeEnd)) {}
    uint8_t in(uint8_t reg) {
        uint8_t v = 0xee;
        uart.read(reg, std::span<uint8_t>(&v, 1));
        return v;
    }
    void out(uint8_t reg, uint8_t v) { uart.write(reg, std::span<const uint8_t>(&v, 1)); }
    void rx(const std::string& s) {
        uart.receive(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(s.data()), s.size()));
    }

    Pipe pipe;
    std::shared_ptr<FakeLine> line;
    Uart16550 uart;
};

TEST_F(UartTest, ResetState) {
    EXPECT_EQ(uart.name(), "uart@0x3f8");
    EXPECT_EQ(in(Uart16550::IIR_FCR), 0x01);  // no interrupt, FIFOs off
    EXPECT_EQ(in(Uart16550::LSR), 0x60);      // THRE | TEMT
    EXPECT_EQ(in(Uart16550::IER), 0x00);
    EXPECT_TRUE(line->levels.empty());
}

TEST_F(UartTest, TransmitWritesOutputAndCounts) {
    for (char c : std::string("hi\n")) out(Uart16550::RBR_THR, c);
    EXPECT_EQ(pipe.drain(), "hi\n");
    EXPECT_EQ(uart.bytesTransmitted(), 3u);
    EXPECT_EQ(in(Uart16550::LSR) & 0x60, 0x60);  // transmitter empty right after a write
}

TEST_F(UartTest, DlabSelectsDivisorLatch) {
    out(Uart16550::LCR, 0x83);  // DLAB | 8N1
    out(0, 0x01);               // DLL: 115200 baud
    out(1, 0x00);               // DLM
    EXPECT_EQ(in(0), 0x01);
    EXPECT_EQ(in(1), 0x00);
    out(0, 0x34);
    out(1, 0x12);
    EXPECT_EQ(in(0), 0x34);
    EXPECT_EQ(in(1), 0x12);
    EXPECT_EQ(uart.bytesTransmitted(), 0u);  // divisor writes are not data
    out(Uart16550::LCR, 0x03);
    EXPECT_EQ(in(Uart16550::LCR), 0x03);
    EXPECT_EQ(in(Uart16550::IER), 0x00);  // IER untouched by the DLM writes
    out(Uart16550::RBR_THR, 'x');
    EXPECT_EQ(pipe.drain(), "x");
}

TEST_F(UartTest, EnablingThriWithEmptyThrRaisesAtOnceAndIirReadClears) {
    out(Uart16550::IER, 0x02);
    EXPECT_TRUE(line->level());
    EXPECT_EQ(in(Uart16550::IIR_FCR), 0x02);  // THRE is the source
    EXPECT_FALSE(line->level());              // reading IIR acknowledged it
    EXPECT_EQ(in(Uart16550::IIR_FCR), 0x01);
    // Disabling and re-enabling raises it again (the Linux UART_BUG_THRE probe).
    out(Uart16550::IER, 0x00);
    out(Uart16550::IER, 0x02);
    EXPECT_TRUE(line->level());
    EXPECT_EQ(line->levels, (std::vector<bool>{true, false, true}));
}

TEST_F(UartTest, ThrWriteClearsAndReRaisesThre) {
    out(Uart16550::IER, 0x02);
    ASSERT_TRUE(line->level());
    line->levels.clear();
    out(Uart16550::RBR_THR, 'a');
    // The line dropped and rose again: a fresh edge for the next byte.
    EXPECT_EQ(line->levels, (std::vector<bool>{false, true}));
    EXPECT_EQ(in(Uart16550::IIR_FCR), 0x02);
}

TEST_F(UartTest, ReceiveRaisesRxInterrupt) {
    rx("ab");
    EXPECT_TRUE(line->levels.empty());  // IER.RDI off: no interrupt, but data is there
    EXPECT_EQ(in(Uart16550::LSR) & 0x01, 0x01);
    out(Uart16550::IER, 0x01);
    EXPECT_TRUE(line->level());
    EXPECT_EQ(in(Uart16550::IIR_FCR), 0x04);
    EXPECT_EQ(in(Uart16550::RBR_THR), 'a');
    EXPECT_TRUE(line->level());
    EXPECT_EQ(in(Uart16550::RBR_THR), 'b');
    EXPECT_FALSE(line->level());
    EXPECT_EQ(in(Uart16550::LSR) & 0x01, 0x00);
    EXPECT_EQ(in(Uart16550::IIR_FCR), 0x01);
    rx("c");
    EXPECT_TRUE(line->level());
}

TEST_F(UartTest, RxHasPriorityOverThre) {
    out(Uart16550::IER, 0x03);
    rx("z");
    EXPECT_EQ(in(Uart16550::IIR_FCR), 0x04);
    // Reading IIR while RX is reported must not acknowledge THRE.
    EXPECT_EQ(in(Uart16550::RBR_THR), 'z');
    EXPECT_EQ(in(Uart16550::IIR_FCR), 0x02);
    EXPECT_EQ(in(Uart16550::IIR_FCR), 0x01);
    EXPECT_FALSE(line->level());
}

TEST_F(UartTest, FifoEnableTriggerLevelAndClear) {
    out(Uart16550::IIR_FCR, 0x81);  // FIFO on, trigger level 8
    out(Uart16550::IER, 0x01);
    EXPECT_EQ(in(Uart16550::IIR_FCR), 0xC1);  // FIFO bits, nothing pending
    rx("1234");
    EXPECT_EQ(in(Uart16550::IIR_FCR), 0xCC);  // below trigger: character timeout
    rx("5678");
    EXPECT_EQ(in(Uart16550::IIR_FCR), 0xC4);  // at trigger: data available
    EXPECT_TRUE(line->level());
    out(Uart16550::IIR_FCR, 0x83);  // clear RX FIFO
    EXPECT_EQ(in(Uart16550::LSR) & 0x01, 0x00);
    EXPECT_EQ(in(Uart16550::IIR_FCR), 0xC1);
    EXPECT_FALSE(line->level());
    rx("q");
    out(Uart16550::IIR_FCR, 0x00);  // FIFOs off: contents discarded, IIR high bits clear
    EXPECT_EQ(in(Uart16550::IIR_FCR), 0x01);
    EXPECT_EQ(in(Uart16550::LSR) & 0x01, 0x00);
}

TEST_F(UartTest, OverrunSetsOeAndLineStatusInterrupt) {
    std::string big(Uart16550::kRxCapacity + 3, 'x');
    rx(big);
    EXPECT_EQ(uart.rxFree(), 0u);
    out(Uart16550::IER, 0x05);
    EXPECT_EQ(in(Uart16550::IIR_FCR), 0x06);  // line status beats data
    uint8_t lsr = in(Uart16550::LSR);
    EXPECT_EQ(lsr & 0x03, 0x03);                 // DR | OE
    EXPECT_EQ(in(Uart16550::LSR) & 0x02, 0x00);  // OE clears on read
    EXPECT_EQ(in(Uart16550::IIR_FCR), 0x04);
}

TEST_F(UartTest, LoopbackRoutesTxToRxAndModemLines) {
    out(Uart16550::MCR, 0x10 | 0x0b);  // LOOP | OUT2 | RTS | DTR
    uint8_t msr = in(Uart16550::MSR);
    EXPECT_EQ(msr & 0xf0, 0xb0);  // DCD (OUT2), DSR (DTR), CTS (RTS); RI (OUT1) off
    out(Uart16550::IER, 0x01);
    out(Uart16550::RBR_THR, 0x5a);
    EXPECT_EQ(pipe.drain(), "");  // nothing leaves the chip
    EXPECT_EQ(uart.bytesTransmitted(), 0u);
    EXPECT_TRUE(line->level());
    EXPECT_EQ(in(Uart16550::RBR_THR), 0x5a);
    rx("ignored");  // external input is disconnected in loopback
    EXPECT_EQ(in(Uart16550::LSR) & 0x01, 0x00);
    out(Uart16550::MCR, 0x10);  // drop all modem outputs
    msr = in(Uart16550::MSR);
    EXPECT_EQ(msr & 0xf0, 0x00);
    EXPECT_EQ(msr & 0x0b, 0x0b);  // DCTS, DDSR, DDCD changed
    EXPECT_EQ(in(Uart16550::MSR) & 0x0f, 0x00);
}

TEST_F(UartTest, ModemStatusInterrupt) {
    out(Uart16550::IER, 0x08);
    EXPECT_FALSE(line->level());
    out(Uart16550::MCR, 0x10);  // loopback with all outputs low: CTS/DSR/DCD fall
    EXPECT_TRUE(line->level());
    EXPECT_EQ(in(Uart16550::IIR_FCR), 0x00);
    in(Uart16550::MSR);
    EXPECT_FALSE(line->level());
}

TEST_F(UartTest, ScratchAndWideAccess) {
    out(Uart16550::SCR, 0x77);
    EXPECT_EQ(in(Uart16550::SCR), 0x77);
    uint8_t two[2];
    uart.read(Uart16550::MSR, two);  // MSR, SCR
    EXPECT_EQ(two[1], 0x77);
}

TEST(Uart, InvalidOutputDiscards) {
    auto line = std::make_shared<FakeLine>();
    Uart16550 uart(line, UniqueFd(), "uart@0x2f8");
    EXPECT_EQ(uart.name(), "uart@0x2f8");
    uint8_t c = 'x';
    uart.write(0, std::span<const uint8_t>(&c, 1));
    EXPECT_EQ(uart.bytesTransmitted(), 1u);
}

}  // namespace
}  // namespace conduit::devices
