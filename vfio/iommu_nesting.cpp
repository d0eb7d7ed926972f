#include "vfio/iommu_nesting.h"

#include <cstring>

#include <fmt/format.h>

#include "base/log.h"
#include "vfio/uapi_compat.h"

namespace conduit::vfio {

void IommuObject::reset() {
    if (owner_) {
        auto r = owner_->destroyObject(id_, what_);
        if (!r) log::get("vfio").warn("{}", r.error().describe());
    }
    owner_ = nullptr;
    id_ = 0;
}

Result<VeventBatch> VeventQueue::read(size_t max) {
    constexpr size_t kHeader = sizeof(iommufd_vevent_header);
    constexpr size_t kRecord = sizeof(iommu_vevent_arm_smmuv3);
    static_assert(sizeof(smmuv3::Event) == kRecord);
    // The sequence runs over [0, INT_MAX] and wraps to 0 (iommufd_vevent_handler()).
    constexpr uint32_t kSeqMask = 0x7fffffff;
    std::vector<uint8_t> buf(std::max<size_t>(max, 1) * (kHeader + kRecord));
    VeventBatch out;
    // The kernel hands out whole records only and answers 0 once the queue is empty.
    auto n = fd_.host()->read(fd_.get(), buf.data(), buf.size());
    if (!n) return std::move(n).error().withContext(fmt::format("read {} (fd {})", what(), fd_.get()));
    size_t at = 0;
    while (at < *n) {
        if (*n - at < kHeader)
            return Error(fmt::format("{}: {} trailing bytes are no vEVENT header", what(), *n - at), EPROTO);
        iommufd_vevent_header h;
        std::memcpy(&h, buf.data() + at, kHeader);
        at += kHeader;
        if (h.flags & ~uint32_t(IOMMU_VEVENTQ_FLAG_LOST_EVENTS))
            return Error(fmt::format("{}: vEVENT header flags {:#x} unknown", what(), h.flags), EPROTO);
        const uint32_t expected = nextSequence_.value_or(h.sequence);
        const uint32_t gap = (h.sequence - expected) & kSeqMask;
        if (h.flags & IOMMU_VEVENTQ_FLAG_LOST_EVENTS) {
            // No data follows; the header carries the number of the last event lost.
            out.lostHeader = true;
            out.lost += gap + 1;
            nextSequence_ = (h.sequence + 1) & kSeqMask;
            continue;
        }
        if (*n - at < kRecord)
            return Error(fmt::format("{}: vEVENT {} truncated ({} of {} bytes)", what(), h.sequence, *n - at, kRecord),
                         EPROTO);
        out.lost += gap;
        Vevent e;
        e.sequence = h.sequence;
        std::memcpy(e.record.data(), buf.data() + at, kRecord);
        at += kRecord;
        out.events.push_back(e);
        nextSequence_ = (h.sequence + 1) & kSeqMask;
    }
    if (out.lost)
        log::get("vfio").warn("{}: {} event(s) lost (queue depth {})", what(), out.lost, depth_);
    return out;
}

namespace smmuv3 {

const char* opcodeName(uint8_t op) {
    switch (op) {
        case kOpPrefetchCfg: return "PREFETCH_CFG";
        case kOpCfgiSte: return "CFGI_STE";
        case kOpCfgiAll: return "CFGI_ALL";
        case kOpCfgiCd: return "CFGI_CD";
        case kOpCfgiCdAll: return "CFGI_CD_ALL";
        case kOpTlbiNhAll: return "TLBI_NH_ALL";
        case kOpTlbiNhAsid: return "TLBI_NH_ASID";
        case kOpTlbiNhVa: return "TLBI_NH_VA";
        case kOpTlbiNhVaa: return "TLBI_NH_VAA";
        case kOpTlbiEl2All: return "TLBI_EL2_ALL";
        case kOpTlbiEl2Asid: return "TLBI_EL2_ASID";
        case kOpTlbiEl2Va: return "TLBI_EL2_VA";
        case kOpTlbiS12Vmall: return "TLBI_S12_VMALL";
        case kOpTlbiS2Ipa: return "TLBI_S2_IPA";
        case kOpTlbiNsnhAll: return "TLBI_NSNH_ALL";
        case kOpAtcInv: return "ATC_INV";
        case kOpPriResp: return "PRI_RESP";
        case kOpResume: return "RESUME";
        case kOpCmdSync: return "CMD_SYNC";
    }
    return "unknown opcode";
}

const char* eventName(uint8_t id) {
    switch (id) {
        case kEvtCBadSte: return "C_BAD_STE";
        case kEvtFStreamDisabled: return "F_STREAM_DISABLED";
        case kEvtCBadSubstreamId: return "C_BAD_SUBSTREAMID";
        case kEvtCBadCd: return "C_BAD_CD";
        case kEvtFTranslation: return "F_TRANSLATION";
        case kEvtFAddrSize: return "F_ADDR_SIZE";
        case kEvtFAccess: return "F_ACCESS";
        case kEvtFPermission: return "F_PERMISSION";
    }
    return "unknown event";
}

}  // namespace smmuv3
}  // namespace conduit::vfio
