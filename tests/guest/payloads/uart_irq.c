/* uart_irq: the 16550's interrupts through I/O APIC pin 4 (edge, active high) -> UART_VECTOR.
 * Enables IER.THRE|IER.RDA, transmits (THRE interrupts) and waits for the host to send bytes on
 * the serial input (RX interrupts; e.g. "ping\n" on conduit's stdin).
 * Serial:  "uart_irq: ready vector 0x44 pin 4"   IOAPIC and IER programmed; send input now
 *          "uart_irq: transmitting"              written with THRE interrupts enabled
 *          "uart_irq: rx \"<bytes>\""            what arrived (non-printables as \xNN), once a
 *                                                newline came or 1 s after the last byte
 *          "uart_irq: ok thre=<n> rx=<n>"        n >= 1 each, then exit 0
 *          "uart_irq: timeout thre=<n> rx=<n>"   after 20 s without both kinds
 * Exit:    0; RT_EXIT_TIMEOUT (0xd2) on timeout. */
#include "rt.h"

#define UART_VECTOR 0x44
#define UART_TIMEOUT_MS 20000
#define RX_QUIET_MS 1000

static volatile uint32_t thre_irqs, rx_irqs, rx_len, other_irqs;
static volatile char rx_buf[64];

/* ring 0: drain every pending cause so the (edge) line drops before we return */
static void on_uart(struct rt_frame *f) {
    (void)f;
    for (int i = 0; i < 16; i++) {
        uint8_t iir = rt_inb(CONDUIT_UART_PORT + UART_IIR);
        if (iir & 1) break; /* nothing pending */
        switch (iir & 0x0e) {
        case 0x02: /* THR empty (cleared by this IIR read) */
            thre_irqs++;
            break;
        case 0x04: /* received data */
        case 0x0c: /* character timeout */
            rx_irqs++;
            while (rt_inb(CONDUIT_UART_PORT + UART_LSR) & UART_LSR_DR) {
                char c = (char)rt_inb(CONDUIT_UART_PORT + UART_RBR);
                if (rx_len < sizeof rx_buf) rx_buf[rx_len] = c;
                rx_len++;
            }
            break;
        case 0x06: /* line status */
            rt_inb(CONDUIT_UART_PORT + UART_LSR);
            other_irqs++;
            break;
        default: /* 0x00 modem status */
            rt_inb(CONDUIT_UART_PORT + UART_MSR);
            other_irqs++;
            break;
        }
    }
}

static int rx_has_newline(void) {
    uint32_t n = rx_len < sizeof rx_buf ? rx_len : sizeof rx_buf;
    for (uint32_t i = 0; i < n; i++)
        if (rx_buf[i] == '\n' || rx_buf[i] == '\r') return 1;
    return 0;
}

int main(const struct conduit_boot_info *bi, unsigned cpu) {
    (void)bi;
    if (cpu != 0) return 0;
    rt_set_handler(UART_VECTOR, on_uart);
    pic_disable();
    lapic_enable();
    ioapic_route(CONDUIT_UART_IRQ, UART_VECTOR, 0 /* edge, active high */, lapic_id());
    rt_outb(CONDUIT_UART_PORT + UART_IER, UART_IER_RDA | UART_IER_THRE);
    rt_printf("uart_irq: ready vector 0x%x pin %u\n", UART_VECTOR, CONDUIT_UART_IRQ);
    rt_printf("uart_irq: transmitting\n");

    uint64_t deadline = rt_deadline_ms(UART_TIMEOUT_MS);
    uint32_t last_len = 0;
    uint64_t quiet = 0;
    for (;;) {
        uint32_t len = rx_len;
        if (len != last_len) {
            last_len = len;
            quiet = rt_deadline_ms(RX_QUIET_MS);
        }
        if (thre_irqs && rx_irqs && (rx_has_newline() || rt_expired(quiet))) break;
        if (rt_expired(deadline)) {
            rt_outb(CONDUIT_UART_PORT + UART_IER, 0);
            rt_printf("uart_irq: timeout thre=%u rx=%u\n", thre_irqs, rx_irqs);
            return RT_EXIT_TIMEOUT;
        }
        rt_pause(); /* spin at CPL3 with IF=1 */
    }
    rt_outb(CONDUIT_UART_PORT + UART_IER, 0);
    ioapic_mask(CONDUIT_UART_IRQ);

    char text[4 * sizeof rx_buf + 1];
    uint32_t n = rx_len < sizeof rx_buf ? rx_len : sizeof rx_buf, k = 0;
    for (uint32_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)rx_buf[i];
        if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') text[k++] = (char)c;
        else k += (uint32_t)rt_snprintf(text + k, sizeof text - k, "\\x%02x", c);
    }
    text[k] = 0;
    rt_printf("uart_irq: rx \"%s\"\n", text);
    rt_printf("uart_irq: ok thre=%u rx=%u\n", thre_irqs, rx_irqs);
    return RT_EXIT_OK;
}
