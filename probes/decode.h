// Ring-buffer record -> checker Event (the host side of probes/events.h).
#pragma once

#include "probes/event.h"

#include <cstddef>
#include <optional>
#include <string>

namespace gms::probes {

enum class DecodeError { none, short_record, unknown_type };

// Decodes one record; nullopt with *err set when it is too short for its
// type or of an unknown type (the caller counts both as losses).
std::optional<Event> decode_record(const void* data, size_t size, DecodeError* err);

// Kernel-internal dev_t (MAJOR << 20 | MINOR) from a userspace st_dev.
uint32_t kernel_dev(uint64_t st_dev);

} // namespace gms::probes
