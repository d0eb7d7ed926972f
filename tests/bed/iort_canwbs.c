/*
 * iort_canwbs IN OUT - the vsmmu bed's IORT (bed.sh --arch arm64 --vsmmu; docs/testing.md).
 *
 * Linux allows IOMMU_VIOMMU_ALLOC(ARM_SMMUV3) only when the device's PCI root complex is CANWBS
 * (the IORT root-complex node's memory access flags, bit 2; only ACPI can say it) or the SMMU has
 * S2FWB; QEMU 10's virt machine gives neither (../shared/smmunest/REPORT.md). This tool takes the
 * IORT QEMU itself built (dumped from /sys/firmware/acpi/tables/IORT in a first ACPI boot of L1)
 * and writes a copy that differs in exactly three places, so Linux's initrd ACPI table upgrade
 * (CONFIG_ACPI_TABLE_UPGRADE) takes it in place of the firmware's:
 *   - every root-complex node (type 2): memory access flags |= CANWBS (bit 2)
 *   - the header's OEM revision + 1 (the upgrade only replaces a table with a newer revision)
 *   - the header's checksum (all bytes sum to 0 mod 256)
 * Offsets are the ACPI IORT spec's (DEN 0049): header of 36 bytes, node count at 36, node array
 * offset at 40; each node: type (1 byte), length (2), revision (1), ...; a root-complex node's
 * node-specific data starts at +16 with the cache coherency attribute (4), allocation hints (1),
 * reserved (2), memory access flags (1, at +23).
 * Prints what it changed; exits non-zero on anything that is not a well-formed IORT with a root
 * complex, so a QEMU that lays the table out differently fails the bed rather than booting an L1
 * without CANWBS.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

enum { kHeaderLen = 36, kNodeCountOff = 36, kNodeArrayOff = 40, kTypeRootComplex = 2, kMemFlagsOff = 23,
       kCanwbs = 1u << 2, kOemRevisionOff = 24, kChecksumOff = 9 };

static uint32_t le32(const uint8_t *p) { return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24; }
static uint16_t le16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static void put_le32(uint8_t *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i)); }
static uint8_t sum(const uint8_t *p, size_t n) { uint8_t s = 0; while (n--) s += *p++; return s; }

int main(int argc, char **argv)
{
    if (argc != 3) { fprintf(stderr, "usage: iort_canwbs IN.aml OUT.aml\n"); return 2; }
    static uint8_t t[1 << 16];
    FILE *f = fopen(argv[1], "rb");
    if (!f) { perror(argv[1]); return 1; }
    size_t n = fread(t, 1, sizeof(t), f);
    fclose(f);
    if (n < kNodeArrayOff + 4 || memcmp(t, "IORT", 4) != 0 || le32(t + 4) != n) {
        fprintf(stderr, "iort_canwbs: %s is not a whole IORT (%zu bytes, header length %u)\n", argv[1], n,
                n >= 8 ? le32(t + 4) : 0);
        return 1;
    }
    if (sum(t, n) != 0) { fprintf(stderr, "iort_canwbs: %s has a bad checksum\n", argv[1]); return 1; }
    uint32_t nodes = le32(t + kNodeCountOff), off = le32(t + kNodeArrayOff);
    int rcs = 0;
    for (uint32_t i = 0; i < nodes; i++) {
        if (off < kHeaderLen || off + 16 > n) { fprintf(stderr, "iort_canwbs: node %u at %u is outside the table\n", i, off); return 1; }
        uint16_t len = le16(t + off + 1);
        if (len < 16 || off + len > n) { fprintf(stderr, "iort_canwbs: node %u at %u has length %u\n", i, off, len); return 1; }
        if (t[off] == kTypeRootComplex) {
            if (len < kMemFlagsOff + 1) { fprintf(stderr, "iort_canwbs: root complex node %u too short\n", i); return 1; }
            uint8_t before = t[off + kMemFlagsOff];
            t[off + kMemFlagsOff] = before | kCanwbs;
            printf("root complex node %u at offset %u: memory access flags 0x%02x -> 0x%02x (CANWBS)\n", i, off, before,
                   t[off + kMemFlagsOff]);
            rcs++;
        }
        off += len;
    }
    if (rcs == 0) { fprintf(stderr, "iort_canwbs: no root complex node in %u nodes\n", nodes); return 1; }
    uint32_t rev = le32(t + kOemRevisionOff);
    put_le32(t + kOemRevisionOff, rev + 1);
    t[kChecksumOff] = 0;
    t[kChecksumOff] = (uint8_t)(0x100 - sum(t, n));
    printf("IORT %.6s %.8s: %zu bytes, OEM revision %u -> %u, checksum 0x%02x\n", (const char *)t + 10,
           (const char *)t + 16, n, rev, rev + 1, t[kChecksumOff]);
    f = fopen(argv[2], "wb");
    if (!f || fwrite(t, 1, n, f) != n || fclose(f) != 0) { perror(argv[2]); return 1; }
    return 0;
}
