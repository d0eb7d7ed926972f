// Text from outside (config keys and values, file names, device arguments) shown inside a one-line
// message: control characters and DEL come out escaped ("\n", "\t", "\x7f"), as JSON would write
// them, so a message never spans lines or carries terminal control codes.
#pragma once

#include <string>
#include <string_view>

namespace conduit {

std::string printable(std::string_view text);

}  // namespace conduit
